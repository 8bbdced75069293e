"""Mapping files: one YAML per using unit, validated whole into typed models before anything
connects. The model (`model`), reading files within bounds (`reading`), loading with templates
and a cache (`loading`, `templates`), and the check that a `query:` only reads (`sql_guard`);
what other packages use is re-exported here: `from etl.mapping import load_mapping`."""

from etl.mapping.loading import (CHAIN_MARK, load_each, load_mapping, load_mapping_cached,
                                 load_mappings, mapping_from_dict, mapping_to_dict, parse_mapping)
from etl.mapping.model import (FREQUENCY, TEMPLATE_FIELD, TICK_MINUTES, TODO, DatasetSpec,
                               DeletedSpec, FieldRule, FileSpec, Mapping, MappingModel, Mode,
                               SourceSpec, UnitSpec, as_key, checks_problems, period_minutes,
                               problems_of, short, template_columns, tx_key, tx_twins)
from etl.mapping.reading import (MAX_ALIAS_NODES, MAX_BYTES, discover, display, parse_yaml,
                                 raw_org_no, read_mapping_file)

__all__ = ["CHAIN_MARK", "FREQUENCY", "MAX_ALIAS_NODES", "MAX_BYTES", "TEMPLATE_FIELD",
           "TICK_MINUTES", "TODO", "DatasetSpec", "DeletedSpec", "FieldRule", "FileSpec",
           "Mapping", "MappingModel", "Mode", "SourceSpec", "UnitSpec", "as_key",
           "checks_problems", "discover", "display", "load_mapping", "load_mapping_cached",
           "load_each", "load_mappings", "mapping_from_dict", "mapping_to_dict", "parse_mapping",
           "parse_yaml",
           "period_minutes", "problems_of", "raw_org_no", "read_mapping_file", "short",
           "template_columns", "tx_key", "tx_twins"]
