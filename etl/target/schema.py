"""The target's schema: tables derived from `etl.standard`.

Business tables are named by the contract (`risk_point`, ...) and their columns exactly as the
standard's identifiers. Each also carries `rowHash`, a digest of the standard fields, so that
change detection compares 32 characters instead of every column. Alembic creates and upgrades
them (`etl.target.migrate`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from etl import standard
from etl.standard import Dataset, Field

HASH_COLUMN = "rowHash"
HMAC_SUFFIX = "Hmac"  # `<field>Hmac`: the blind index of an encrypted field (etl.target.crypt)
HMAC_LENGTH = 64
TEXT_THRESHOLD = 500  # longer C fields become TEXT (MariaDB's row size limit)

metadata = sa.MetaData()


def _column_type(f: Field) -> sa.types.TypeEngine:
    if f.type == "D":
        return sa.Date()
    if f.type == "N" and f.name != "txCode":
        return sa.SmallInteger()
    if f.storage_length > TEXT_THRESHOLD:
        return sa.Text()
    return sa.String(f.storage_length)


def hmac_column(name: str) -> str:
    """The blind-index column of encrypted field `name`: HMAC-SHA256 of the plaintext, hex;
    NULL when the value is stored in clear (no data key) or is NULL."""
    return f"{name}{HMAC_SUFFIX}"


def _dataset_table(ds: Dataset) -> sa.Table:
    envelope = [sa.Column(f.name, _column_type(f), primary_key=f.name == "ID", nullable=False)
                for f in standard.ENVELOPE]
    fields = ds.fields if standard.UNIT_KEY in ds.field_names else (
        Field(standard.UNIT_KEY, "统一社会信用代码", "C", 18, required=True), *ds.fields)
    columns = [sa.Column(f.name, _column_type(f), nullable=f.name != standard.UNIT_KEY)
               for f in fields]
    columns += [sa.Column(hmac_column(f.name), sa.String(HMAC_LENGTH), nullable=True,
                          comment=f"blind index of {f.name} (migration 0007)")
                for f in standard.encrypted_fields(ds)]
    indexes = [sa.Index(f"ix_{ds.table}_orgNo", standard.UNIT_KEY)]
    referenced = {r.target_field for d in standard.DATASETS for r in d.references
                  if r.tx_code == ds.tx_code}
    indexes += [sa.Index(f"ix_{ds.table}_{name}", standard.UNIT_KEY, name) for name in sorted(referenced)]
    indexes.append(sa.Index(f"ix_{ds.table}_batchNo", "batchNo"))
    return sa.Table(ds.table, metadata, *envelope, *columns,
                    sa.Column(HASH_COLUMN, sa.String(32), nullable=False), *indexes,
                    comment=f"{ds.structure} {ds.zh} (txCode {ds.tx_code})")


DATASET_TABLES: dict[str, sa.Table] = {ds.tx_code: _dataset_table(ds) for ds in standard.DATASETS}

def _serial(name: str) -> sa.Column:
    """A surrogate key: BIGINT identity, INTEGER on SQLite (its rowid alias)."""
    return sa.Column(name, sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                     autoincrement=True)


def _scope() -> list[sa.Column]:
    """Which run, unit and dataset a bookkeeping row belongs to."""
    return [sa.Column("runId", sa.String(200), nullable=False),
            sa.Column("orgNo", sa.String(18), nullable=False),
            sa.Column("txCode", sa.String(2), nullable=False)]


ingest_batch = sa.Table(
    "ingest_batch", metadata,
    sa.Column("batchNo", sa.String(16), primary_key=True),
    sa.Column("orgNo", sa.String(18), nullable=False),
    sa.Column("txCode", sa.String(2), nullable=False),
    sa.Column("busType", sa.String(1), nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("runId", sa.String(200), nullable=False),
    sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_ingest_batch_org_tx", "orgNo", "txCode"),
    comment="one row per batch (A.2 batchNo): a run's records of one txCode and busType",
)

ingest_batch_seq = sa.Table(
    "ingest_batch_seq", metadata,
    sa.Column("day", sa.String(8), primary_key=True),
    sa.Column("lastSeq", sa.Integer, nullable=False),
    comment="the last batch sequence number handed out per day (CST)",
)

ingest_change = sa.Table(
    "ingest_change", metadata,
    _serial("changeId"),
    sa.Column("batchNo", sa.String(16), nullable=False),
    sa.Column("ID", sa.String(64), nullable=False),
    sa.Column("busType", sa.String(1), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Index("ix_ingest_change_batchNo", "batchNo"),  # no index on ID: migration 0002
    comment="the ledger: each record as loaded, per batch (replayable as a B.3 message)",
)

ingest_reject = sa.Table(
    "ingest_reject", metadata,
    _serial("rejectId"),
    *_scope(),
    sa.Column("sourceKey", sa.String(500), nullable=False),
    sa.Column("field", sa.String(50), nullable=False),
    sa.Column("rule", sa.String(50), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_ingest_reject_run", "runId", "orgNo", "txCode"),
    comment="rejected rows (severity error), dropped duplicates and warnings; personal data masked",
)

#: Who and what ran each load (etl.common.provenance): name, length, comment.
RUN_AUDIT_COLUMNS = (
    ("dagRunId", 250, "the Airflow DAG run id; null outside Airflow"),
    ("host", 255, "the host the load ran on"),
    ("osUser", 128, "the OS account it ran as"),
    ("mappingHash", 64, "sha256 of the mapping file's bytes"),
    ("codeVersion", 64, "package version, +g<commit> from a git checkout"),
)

ingest_run = sa.Table(
    "ingest_run", metadata,
    _serial("runKey"),
    *_scope(),
    sa.Column("mapping", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(12), nullable=False),
    sa.Column("windowStart", sa.DateTime, nullable=True),
    sa.Column("windowEnd", sa.DateTime, nullable=True),
    sa.Column("status", sa.String(10), nullable=False),
    *[sa.Column(name, sa.Integer, nullable=False, default=0) for name in (
        "extracted", "inserted", "updated", "deleted", "unchanged", "rejected", "duplicates",
        "warnings")],
    sa.Column("skippedDeleted", sa.Integer, nullable=False, default=0, server_default="0",
              comment="soft-deleted at the source before it was ever loaded"),
    sa.Column("overridden", sa.Integer, nullable=False, default=0, server_default="0",
              comment="rows that loaded only because the mapping's checks: lowered an error"),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("startedAt", sa.DateTime(timezone=True), nullable=False),
    sa.Column("endedAt", sa.DateTime(timezone=True), nullable=True),
    *[sa.Column(name, sa.String(length), nullable=True, comment=comment)  # migration 0006
      for name, length, comment in RUN_AUDIT_COLUMNS],
    sa.Column("keyColumns", sa.String(500), nullable=True,  # migration 0009
              comment="the source key columns (JSON) records were identified by"),
    sa.Column("sweptKeys", sa.Integer, nullable=True,
              comment="source keys compared with the target to find hard deletes; null: none"),
    sa.Index("ix_ingest_run_unit", "orgNo", "txCode", "status"),
    sa.Index("ix_ingest_run_latest", "orgNo", "txCode", "status", "runKey"),  # freshness: 0005
    comment="one row per run and dataset: counts, mode, window (naive CST), status",
)

ingest_audit = sa.Table(
    "ingest_audit", metadata,
    _serial("auditId"),
    *_scope(),
    sa.Column("field", sa.String(50), nullable=False),
    sa.Column("rule", sa.String(50), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("examples", sa.Text, nullable=False),
    sa.Index("ix_ingest_audit_run", "runId", "orgNo", "txCode"),
    comment="what cleaning did per run, dataset, field and rule, with masked examples",
)

ingest_reconcile = sa.Table(
    "ingest_reconcile", metadata,
    _serial("reconcileId"),
    *_scope(),
    sa.Column("state", sa.String(10), nullable=False),
    *[sa.Column(name, sa.Integer, nullable=False, default=0) for name in (
        "sourceValid", "targetActive", "missing", "differing", "extra", "notIngested")],
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("checkedAt", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_ingest_reconcile_unit", "orgNo", "txCode", "reconcileId"),
    comment="one row per reconciliation (etl reconcile, 5.3) and dataset: exact counts, and "
            "the missing, extra and differing records and rejected rows as masked, capped JSON",
)

ingest_media = sa.Table(
    "ingest_media", metadata,
    sa.Column("ID", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(50), primary_key=True),
    sa.Column("orgNo", sa.String(18), nullable=False),
    sa.Column("txCode", sa.String(2), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mediaType", sa.String(100), nullable=False),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("location", sa.String(1000), nullable=False),
    sa.Column("sourceSize", sa.BigInteger, nullable=True),
    sa.Column("sourceMtime", sa.String(64), nullable=True),
    sa.Column("fetchedAt", sa.DateTime(timezone=True), nullable=False),
    sa.Column("runId", sa.String(200), nullable=False),
    sa.Index("ix_ingest_media_unit", "orgNo", "txCode"),
    sa.Index("ix_ingest_media_sha256", "sha256"),
    comment="the file behind each record's M field (etl.media.attachments; migration 0008): one "
            "current row per record and field, its content in the media store by sha256",
)

ingest_stage = sa.Table(
    "ingest_stage", metadata,
    # Byte-wise collation: keys differing only in case are different objects, and a prefix
    # match can use the primary key whatever the database's default collation is.
    sa.Column("stageKey", sa.String(400)
              .with_variant(postgresql.VARCHAR(400, collation="C"), "postgresql")
              .with_variant(mysql.VARCHAR(400, charset="ascii", collation="ascii_bin"),
                            "mysql", "mariadb"),
              primary_key=True),
    sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
              nullable=False),
    sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
    comment="scratch: objects Airflow tasks hand each other (etl.orchestration.staging), in parts of at most "
            "4 MiB; UNLOGGED on PostgreSQL",
)

#: `ingest_key.purpose` of the data key's row (etl.target.crypt): the one row there is
DATA_KEY_PURPOSE = "data"

ingest_key = sa.Table(
    "ingest_key", metadata,
    sa.Column("purpose", sa.String(16), primary_key=True),
    sa.Column("keyId", sa.String(8), nullable=False,
              comment="the key id its ciphertexts carry (enc:v1:<keyId>:...)"),
    sa.Column("fingerprint", sa.String(64), nullable=False,
              comment="HKDF-SHA256 of the key under its own label, hex: one-way, never the key"),
    sa.Column("setAt", sa.DateTime(timezone=True), nullable=False),
    sa.Column("setBy", sa.String(200), nullable=False,
              comment="the run that stored the first encrypted value, or etl rotate-key"),
    comment="the data key the target's encrypted values are under (etl.target.crypt; migration "
            "0010): a load with another key, or none, is refused; etl rotate-key moves it",
)

ingest_app = sa.Table(
    "ingest_app", metadata,
    sa.Column("appId", sa.String(32), primary_key=True, comment="the unit's Appid (B.1): random, public"),
    sa.Column("orgNo", sa.String(18), nullable=False),
    sa.Column("secretHash", sa.String(200), nullable=False,
              comment="scrypt of the AppSecret with its salt and parameters; never the secret"),
    sa.Column("generation", sa.Integer, nullable=False,
              comment="raised by each rotation: a token of an earlier secret is refused"),
    sa.Column("state", sa.String(10), nullable=False, comment="active or revoked"),
    sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rotatedAt", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revokedAt", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_ingest_app_orgNo", "orgNo"),
    comment="the interface route's credentials (5.2.2, B.1; etl.interface.apps; migration 0011): one "
            "Appid and the hash of its AppSecret per unit, written by `etl apps` as the owner",
)

ingest_token = sa.Table(
    "ingest_token", metadata,
    sa.Column("tokenHash", sa.String(64), primary_key=True,
              comment="SHA-256 of the access_token, hex; never the token"),
    sa.Column("appId", sa.String(32), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False, comment="the app's generation it was issued under"),
    sa.Column("issuedAt", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expiresAt", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revokedAt", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_ingest_token_app", "appId", "issuedAt"),
    comment="access tokens issued (B.2; migration 0011): appended by the service, revoked by "
            "`etl apps rotate|revoke` as the owner",
)

ingest_push = sa.Table(
    "ingest_push", metadata,
    sa.Column("orgNo", sa.String(18), primary_key=True),
    sa.Column("txCode", sa.String(2), primary_key=True),
    sa.Column("unitBatchNo", sa.String(16), primary_key=True,
              comment="the unit's batchNo of the B.3 message (not ours: batches holds ours)"),
    sa.Column("digest", sa.String(64), nullable=False,
              comment="sha256 of the message's busType and data: a repeat must match it"),
    sa.Column("batches", sa.String(100), nullable=False,
              comment="our batch numbers it loaded under, as JSON {busType: batchNo}"),
    sa.Column("answer", sa.Text, nullable=False, comment="the answer given, as JSON"),
    sa.Column("runId", sa.String(200), nullable=False),
    sa.Column("receivedAt", sa.DateTime(timezone=True), nullable=False),
    comment="one row per message a unit pushed (5.2.2, B.3; etl.interface.receive; migration "
            "0012): a repeat of (orgNo, txCode, unitBatchNo) is answered from it and loads nothing",
)


def table(tx_code: str) -> sa.Table:
    return DATASET_TABLES[standard.dataset(tx_code).tx_code]
