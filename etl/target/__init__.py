"""The collecting organisation's target database: its schema derived from the standard
(`schema`), connecting (`connect`), creating and upgrading it (`migrate`, `migrations/`), loading
a unit's dataset (`load`, the prepared frame's columns in `frame`), what it remembers of each
dataset between runs (`history`), encryption at rest (`crypt`) and least-privilege roles
(`roles`). The schema, connecting and upgrading are re-exported here: `target.table("09")`."""

from etl.target.connect import DEFAULT_URL, connect, connect_existing, target_origin, target_url
from etl.target.migrate import MIGRATIONS, current_revision, ensure_schema, head_revision, upgrade
from etl.target.schema import (DATASET_TABLES, HASH_COLUMN, HMAC_LENGTH, HMAC_SUFFIX,
                               RUN_AUDIT_COLUMNS, TEXT_THRESHOLD, hmac_column, ingest_audit,
                               ingest_batch, ingest_batch_seq, ingest_change, ingest_key, ingest_media,
                               ingest_push, ingest_reconcile, ingest_reject, ingest_run, ingest_stage, metadata,
                               table)

__all__ = ["DATASET_TABLES", "DEFAULT_URL", "HASH_COLUMN", "HMAC_LENGTH", "HMAC_SUFFIX",
           "MIGRATIONS", "RUN_AUDIT_COLUMNS", "TEXT_THRESHOLD", "connect", "connect_existing", "current_revision",
           "ensure_schema", "head_revision", "hmac_column", "ingest_audit", "ingest_batch",
           "ingest_batch_seq", "ingest_change", "ingest_key", "ingest_media", "ingest_push", "ingest_reconcile",
           "ingest_reject", "ingest_run", "ingest_stage", "metadata", "table", "target_origin",
           "target_url", "upgrade"]
