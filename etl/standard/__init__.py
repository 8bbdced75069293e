"""The Jiangsu standard (特种设备双重预防数据归集技术规范): its tables A.2-A.11 as data
(`tables`, re-exported here: `standard.dataset("09")`), and what reads them: cleaning (`clean`),
validation (`validate`), the checks of the standards it references (`checks`: GB 11643,
GB 32100; `divisions`: GB/T 2260; `phones`)."""

from etl.standard.tables import (ACCEPT_INFOS, ACCIDENT_TYPES, BY_TX_CODE, CONTROL_LEVELS,
                                 DATASETS, DEAL_INFOS, ENCRYPTED_LENGTH, ENVELOPE, FLAG_VALUES,
                                 GALLERY_TYPES, LICENCE_KINDS, MEASURE_TYPES, RISK_LEVELS,
                                 RISK_TYPES, TROUBLE_LEVELS, TROUBLE_TYPES, TX_CODES, UNIT_KEY,
                                 Dataset, DateOrder, Field, FieldType, Frequency, Kind,
                                 Reference, RequiredWhen, by_frequency, dataset,
                                 encrypted_fields, protected_fields, record_columns)

__all__ = ["ACCEPT_INFOS", "ACCIDENT_TYPES", "BY_TX_CODE", "CONTROL_LEVELS", "DATASETS",
           "DEAL_INFOS", "ENCRYPTED_LENGTH", "ENVELOPE", "FLAG_VALUES", "GALLERY_TYPES",
           "LICENCE_KINDS", "MEASURE_TYPES", "RISK_LEVELS", "RISK_TYPES", "TROUBLE_LEVELS",
           "TROUBLE_TYPES", "TX_CODES", "UNIT_KEY", "Dataset", "DateOrder", "Field", "FieldType",
           "Frequency", "Kind", "Reference", "RequiredWhen", "by_frequency", "dataset",
           "encrypted_fields", "protected_fields", "record_columns"]
