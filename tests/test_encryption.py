"""Encryption at rest of personal data (issue 14): with a data key no ID number, certificate
number or phone is stored in clear anywhere in the target; without it nothing changes.

Real SQLite, PostgreSQL and MariaDB targets; every text column of every table is scanned.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from etl import pipeline, standard, target
from etl.common import clock
from etl.mapping import load_mapping
from etl.target import crypt
from helpers import ORG_A, gb11643, rows_of

ID_NUMBERS = [gb11643(f"3201151990010{i}12{i}") for i in range(1, 4)]
CERTS = ["T320115000001", "T320115000002", "T320115000003"]
UNIT_TEL = "13700001111"
DEPT_TELS = ["18600002222", "18600003333"]
PHONES = [UNIT_TEL, *DEPT_TELS]
_GOOD = gb11643("32011519900104124")
BAD_ID = _GOOD[:17] + ("1" if _GOOD[17] != "1" else "2")  # a wrong check character: rejected
SECRETS = [*ID_NUMBERS, *CERTS, *PHONES, BAD_ID]

MAPPING = f"""\
unit: {{orgNo: "{ORG_A}", comName: 南京某某化工有限公司}}
source: {{url_env: CRYPT_SOURCE_URL}}
datasets:
  "01":
    table: t_company
    key: [id]
    fields: {{comName: name, orgNo: code, cityCode: city, aeraCode: area, linkMan: man, linkTel: tel}}
  "02":
    table: t_dept
    key: [id]
    fields: {{deptName: name, isSecDept: sec, dLinkMan: man, dLinkTel: tel}}
  "03":
    table: t_person
    key: [id]
    fields:
      psnName: name
      idCardNo: id_no
      deptName: dept
      isSecChief: {{value: 0}}
      isSecManager: {{value: 1}}
      isOpr: {{value: 1}}
      isRes: {{value: 0}}
      lcnsKind: {{value: 电梯作业}}
      certNo: cert
"""


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def write_source(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t_company (id INTEGER, name TEXT, code TEXT, city TEXT, "
                             "area TEXT, man TEXT, tel TEXT)")
        conn.exec_driver_sql("CREATE TABLE t_dept (id INTEGER, name TEXT, sec TEXT, man TEXT, tel TEXT)")
        conn.exec_driver_sql("CREATE TABLE t_person (id INTEGER, name TEXT, id_no TEXT, dept TEXT, "
                             "cert TEXT)")
        conn.execute(sa.text("INSERT INTO t_company VALUES (1, '南京某某化工有限公司', :org, "
                             "'320100', '320115', '李四', :tel)"), {"org": ORG_A, "tel": UNIT_TEL})
        for i, (name, tel) in enumerate(zip(("安全部", "设备部"), DEPT_TELS), 1):
            conn.execute(sa.text("INSERT INTO t_dept VALUES (:i, :n, '1', '王五', :t)"),
                         {"i": i, "n": name, "t": tel})
        for i, (id_no, cert) in enumerate(zip(ID_NUMBERS, CERTS), 1):
            conn.execute(sa.text("INSERT INTO t_person VALUES (:i, :n, :id, '安全部', :c)"),
                         {"i": i, "n": f"张{i}", "id": id_no, "c": cert})
        conn.execute(sa.text("INSERT INTO t_person VALUES (9, '赵九', :id, '安全部', 'T9')"),
                     {"id": BAD_ID})
    engine.dispose()


def _mapping(tmp_path, monkeypatch):
    src = f"sqlite:///{tmp_path / 'source.sqlite'}"
    if not (tmp_path / "source.sqlite").exists():
        write_source(src)
    monkeypatch.setenv("CRYPT_SOURCE_URL", src)
    p = tmp_path / "unit.yaml"
    p.write_text(MAPPING, encoding="utf-8")
    return load_mapping(p)


def _load(url, tmp_path, monkeypatch):
    engine = target.connect(url)
    try:
        results = pipeline.run_mapping(engine, _mapping(tmp_path, monkeypatch))
    finally:
        engine.dispose()
    assert [r.status for r in results] == ["success"] * 3, [r.message for r in results]
    return results


def _texts(url: str) -> dict[tuple[str, str], list[str]]:
    """Every text value of every table, by (table, column): what anyone reading the target sees."""
    engine = target.connect(url)
    out: dict[tuple[str, str], list[str]] = {}
    with engine.connect() as conn:
        for name in sa.inspect(engine).get_table_names():
            t = sa.Table(name, sa.MetaData(), autoload_with=conn)
            for col in t.columns:
                out[(name, col.name)] = [
                    v if isinstance(v, str) else v.decode("utf-8", "replace")
                    if isinstance(v, bytes) else str(v)
                    for v in conn.execute(sa.select(col)).scalars() if v is not None]
    engine.dispose()
    return out


def _found(url: str, secrets: list[str]) -> list[str]:
    hits = []
    for (table, column), values in _texts(url).items():
        for v in values:
            compact = re.sub(r"[\s-]", "", v)
            hits += [f"{table}.{column}" for s in secrets if s in v or s in compact]
    return hits


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'target.sqlite'}"
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")


@pytest.fixture
def key(monkeypatch) -> str:
    k = new_key()
    monkeypatch.setenv("ETL_DATA_KEY", k)
    monkeypatch.delenv("ETL_DATA_KEY_OLD", raising=False)
    return k


def _persons(url):
    return {r["psnName"]: r for r in rows_of(url, "unit_person")}


# --- the cipher --------------------------------------------------------------------------------


def test_a_ciphertext_decrypts_only_with_its_key_field_and_record():
    k, other = crypt.parse_key(new_key(), "k"), crypt.parse_key(new_key(), "o")
    value = crypt.encrypt(ID_NUMBERS[0], "idCardNo", "R1", k)
    assert value.startswith(f"enc:v1:{k.id}:") and ID_NUMBERS[0] not in value
    assert len(value) <= standard.ENCRYPTED_LENGTH
    assert crypt.decrypt(value, "idCardNo", "R1", [k]) == ID_NUMBERS[0]
    assert crypt.encrypt(ID_NUMBERS[0], "idCardNo", "R1", k) != value  # a fresh nonce
    with pytest.raises(crypt.DecryptError, match="not given"):
        crypt.decrypt(value, "idCardNo", "R1", [other])
    forged = value.replace(k.id, other.id)
    with pytest.raises(crypt.DecryptError, match="does not decrypt"):
        crypt.decrypt(forged, "idCardNo", "R1", [other])
    with pytest.raises(crypt.DecryptError, match="moved"):
        crypt.decrypt(value, "idCardNo", "R2", [k])  # moved to another record
    with pytest.raises(crypt.DecryptError, match="moved"):
        crypt.decrypt(value, "certNo", "R1", [k])  # or another field


def test_a_malformed_key_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv("ETL_DATA_KEY", "c2hvcnQ=")
    with pytest.raises(Exception, match="ETL_DATA_KEY: not a data key .*os.urandom") as e:
        crypt.data_key()
    assert "c2hvcnQ=" not in str(e.value)


def test_encrypted_fields_derive_from_the_standard():
    fields = {(ds.tx_code, f.name) for ds in standard.DATASETS for f in standard.encrypted_fields(ds)}
    phones = {(ds.tx_code, f.name) for ds in standard.DATASETS for f in ds.fields if f.kind == "phone"}
    assert phones <= fields and {("03", "idCardNo"), ("03", "certNo")} <= fields
    for tx, name in fields:
        col = target.table(tx).c[name]
        assert col.type.length == standard.ENCRYPTED_LENGTH
        assert target.table(tx).c[target.hmac_column(name)].type.length == 64


# --- the pipeline with a key -------------------------------------------------------------------


def test_with_a_key_no_id_number_or_phone_is_stored_in_clear(url, key, tmp_path, monkeypatch):
    _load(url, tmp_path, monkeypatch)
    assert [r["field"] for r in rows_of(url, "ingest_reject")] == ["idCardNo"]  # kept masked
    assert _found(url, SECRETS) == []
    k = crypt.parse_key(key, "k")
    persons = _persons(url)
    assert len(persons) == 3
    unit = rows_of(url, "unit_info")[0]
    assert crypt.decrypt(unit["linkTel"], "linkTel", unit["ID"], [k]) == UNIT_TEL
    assert sorted(crypt.decrypt(d["dLinkTel"], "dLinkTel", d["ID"], [k])
                  for d in rows_of(url, "unit_dept")) == DEPT_TELS
    for i, (id_no, cert) in enumerate(zip(ID_NUMBERS, CERTS), 1):
        r = persons[f"张{i}"]
        for name, plain in (("idCardNo", id_no), ("certNo", cert)):
            assert r[name].startswith(f"enc:v1:{k.id}:") and r[name] != plain
            assert crypt.decrypt(r[name], name, r["ID"], [k]) == plain
            assert r[f"{name}Hmac"] == crypt.blind_index(plain, k)
        with pytest.raises(crypt.DecryptError):
            crypt.decrypt(r["idCardNo"], "idCardNo", r["ID"], [crypt.parse_key(new_key(), "w")])
    # the ledger holds the same ciphertext as the table
    ledger = {c["ID"]: json.loads(c["record"]) for c in rows_of(url, "ingest_change")}
    for r in persons.values():
        assert ledger[r["ID"]]["idCardNo"] == r["idCardNo"]


def test_a_rerun_writes_no_u_batch_although_each_run_encrypts_afresh(url, key, tmp_path, monkeypatch):
    _load(url, tmp_path, monkeypatch)
    before = _persons(url)
    results = _load(url, tmp_path, monkeypatch)
    assert [(r.counts.inserted, r.counts.updated, r.counts.batches) for r in results] == [(0, 0, {})] * 3
    after = _persons(url)
    assert {n: (r["idCardNo"], r["rowHash"], r["batchNo"]) for n, r in after.items()} == {
        n: (r["idCardNo"], r["rowHash"], r["batchNo"]) for n, r in before.items()}


def test_the_row_hash_is_that_of_the_plaintext(url, tmp_path, monkeypatch):
    monkeypatch.delenv("ETL_DATA_KEY", raising=False)
    _load(url, tmp_path, monkeypatch)
    clear = {n: r["rowHash"] for n, r in _persons(url).items()}
    assert {r["idCardNo"] for r in _persons(url).values()} == set(ID_NUMBERS)
    assert all(r["idCardNoHmac"] is None for r in _persons(url).values())
    monkeypatch.setenv("ETL_DATA_KEY", new_key())
    results = _load(url, tmp_path, monkeypatch)  # the same data, now with a key: nothing changed
    assert [r.counts.updated for r in results] == [0, 0, 0]
    assert {n: r["rowHash"] for n, r in _persons(url).items()} == clear


# --- rotation, decryption, the migration ------------------------------------------------------


def _state(url):
    """What a rotation must not touch: every record's envelope and hash, the batches, the
    ledger's rows."""
    recs = {tx: {r["ID"]: (r["rowHash"], r["busType"], r["batchNo"], str(r["updateDate"]))
                 for r in rows_of(url, target.table(tx).name)} for tx in ("01", "02", "03")}
    ledger = [(c["changeId"], c["batchNo"], c["ID"], c["busType"]) for c in rows_of(url, "ingest_change")]
    return recs, len(rows_of(url, "ingest_batch")), sorted(ledger)


def _every_encrypted_value(url):
    """(field, record ID, stored value) of every encrypted field in the tables and the ledger."""
    out = []
    for tx in ("01", "02", "03"):
        ds = standard.dataset(tx)
        for r in rows_of(url, ds.table):
            out += [(f.name, r["ID"], r[f.name]) for f in standard.encrypted_fields(ds)
                    if r[f.name] is not None]
    for c in rows_of(url, "ingest_change"):
        rec = json.loads(c["record"])
        out += [(name, c["ID"], rec[name]) for name in ("linkTel", "dLinkTel", "idCardNo", "certNo")
                if rec.get(name) is not None]
    return out


def test_rotate_key_reencrypts_everything_in_place_without_a_batch(url, key, tmp_path, monkeypatch, capsys):
    from etl import cli

    _load(url, tmp_path, monkeypatch)
    before = _state(url)
    old, new = crypt.parse_key(key, "old"), crypt.parse_key(new_key(), "new")
    monkeypatch.setenv("ETL_DATA_KEY", base64.b64encode(new.secret).decode())
    monkeypatch.setenv("ETL_DATA_KEY_OLD", f"{new_key()},{key}")
    assert cli.main(["rotate-key", "--target", url, "--batch-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "unit_person: 6 values" in out and "ingest_change: 6 ledger rows" in out
    assert _state(url) == before  # no batch, no ledger row, rowHash/busType/batchNo/updateDate kept
    values = _every_encrypted_value(url)
    assert len(values) == 9 + 9  # 3 ID numbers, 3 certificates, 3 phones: tables and ledger
    plain = set()
    for name, rid, v in values:
        assert crypt.key_id_of(v) == new.id
        plain.add(crypt.decrypt(v, name, rid, [new]))
        with pytest.raises(crypt.DecryptError):
            crypt.decrypt(v, name, rid, [old])  # the old key no longer reads it
    assert plain == set(SECRETS) - {BAD_ID}
    for r in rows_of(url, "unit_person"):
        assert r["idCardNoHmac"] == crypt.blind_index(crypt.decrypt(r["idCardNo"], "idCardNo", r["ID"], [new]), new)
    assert _found(url, SECRETS) == []
    assert cli.main(["rotate-key", "--target", url]) == 0  # idempotent
    assert "unit_person: 0 values" in capsys.readouterr().out
    results = _load(url, tmp_path, monkeypatch)  # a later load under the new key: nothing changed
    assert [r.counts.batches for r in results] == [{}] * 3
    assert _state(url) == before


def test_rotate_key_without_the_old_key_fails_naming_it(tmp_path, key, monkeypatch, capsys):
    from etl import cli

    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _load(url, tmp_path, monkeypatch)
    monkeypatch.setenv("ETL_DATA_KEY", new_key())
    assert cli.main(["rotate-key", "--target", url]) == 2
    err = capsys.readouterr().err
    assert "ETL_DATA_KEY_OLD" in err and crypt.parse_key(key, "k").id in err


def test_decrypt_needs_the_key_and_masks_unless_clear(tmp_path, key, monkeypatch, capsys):
    from etl import cli

    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _load(url, tmp_path, monkeypatch)
    args = ["decrypt", "--org", ORG_A, "--tx", "03", "--target", url]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3 and not any(s in out for s in SECRETS)
    assert {r["idCardNo"][:6] for r in rows} == {"320115"}  # masked, not ciphertext
    assert cli.main([*args, "--clear", "--find", ID_NUMBERS[1]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["idCardNo"], r["certNo"]) for r in rows] == [(ID_NUMBERS[1], CERTS[1])]
    monkeypatch.delenv("ETL_DATA_KEY")
    assert cli.main(args) == 2
    assert "needs the data key: set ETL_DATA_KEY" in capsys.readouterr().err


def test_without_a_key_the_etl_run_cli_stores_what_it_always_did(tmp_path, monkeypatch):
    monkeypatch.delenv("ETL_DATA_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _mapping(tmp_path, monkeypatch)
    env = {k: v for k, v in os.environ.items() if k != "ETL_DATA_KEY"}
    p = subprocess.run([sys.executable, "-m", "etl", "run", str(tmp_path / "unit.yaml"), "--target", url],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert {r["idCardNo"] for r in rows_of(url, "unit_person")} == set(ID_NUMBERS)


def test_0007_widens_and_indexes_a_target_made_before_it(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = target.connect(url)
    target.upgrade(engine)
    with engine.begin() as conn:
        q = conn.dialect.identifier_preparer.quote
        for tx in ("01", "02", "03"):
            ds = standard.dataset(tx)
            for f in standard.encrypted_fields(ds):
                conn.exec_driver_sql(f"ALTER TABLE {ds.table} DROP COLUMN {q(f.name + 'Hmac')}")
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"ALTER TABLE {ds.table} ALTER COLUMN {q(f.name)} "
                                         f"TYPE VARCHAR({f.length})")
                elif conn.dialect.name != "sqlite":
                    conn.exec_driver_sql(f"ALTER TABLE {ds.table} MODIFY {q(f.name)} VARCHAR({f.length})"
                                         + " NULL")
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
    assert target.upgrade(engine) == ("0006", target.head_revision())
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), target.metadata) == []
    if engine.dialect.name != "sqlite":
        col = {c["name"]: c for c in sa.inspect(engine).get_columns("unit_person")}["idCardNo"]
        assert col["type"].length == standard.ENCRYPTED_LENGTH
    engine.dispose()


def test_a_malformed_key_stops_etl_run_before_anything_is_written(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _mapping(tmp_path, monkeypatch)
    env = {**os.environ, "ETL_DATA_KEY": "not-a-key"}
    p = subprocess.run([sys.executable, "-m", "etl", "run", str(tmp_path / "unit.yaml"), "--target", url],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "ETL_DATA_KEY: not a data key" in p.stderr
    assert "not-a-key" not in p.stderr and not (tmp_path / "target.sqlite").exists()


def test_0010_adds_the_key_table_to_a_target_made_before_it(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = target.connect(url)
    target.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE ingest_key")
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0009'"))
    assert target.upgrade(engine) == ("0009", target.head_revision())
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), target.metadata) == []
        assert conn.execute(sa.select(sa.func.count()).select_from(target.ingest_key)).scalar() == 0
    engine.dispose()


# --- the target's key (issue 23) ----------------------------------------------------------------


def _run(url, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    from etl import cli

    _mapping(tmp_path, monkeypatch)
    capsys.readouterr()
    code = cli.main(["run", str(tmp_path / "unit.yaml"), "--target", url])
    return code, capsys.readouterr().err


def _stored(url) -> dict | None:
    rows = rows_of(url, "ingest_key")
    assert len(rows) <= 1
    return rows[0] if rows else None


def test_the_first_encrypted_load_records_the_keys_fingerprint_never_the_key(url, key, tmp_path, monkeypatch):
    _load(url, tmp_path, monkeypatch)
    k = crypt.parse_key(key, "k")
    row = _stored(url)
    assert (row["purpose"], row["keyId"], row["fingerprint"]) == ("data", k.id, k.fingerprint)
    assert row["setBy"].startswith("cli__")
    assert k.fingerprint not in (k.secret.hex(), crypt.blind_index("", k)) and len(k.fingerprint) == 64
    for shown in (key, k.secret.hex(), k.index_key().hex()):
        assert not any(shown in v for values in _texts(url).values() for v in values)
    _load(url, tmp_path, monkeypatch)  # the right key runs, and leaves the record as it was
    assert _stored(url) == row


def test_a_run_with_another_key_is_refused_in_one_line_and_writes_nothing(url, key, tmp_path, monkeypatch, capsys):
    _load(url, tmp_path, monkeypatch)
    before = _texts(url)
    right, wrong = crypt.parse_key(key, "k"), new_key()
    monkeypatch.setenv("ETL_DATA_KEY", wrong)
    code, err = _run(url, tmp_path, monkeypatch, capsys)
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert f"ETL_DATA_KEY is data key {crypt.parse_key(wrong, 'w').id}" in err
    assert f"under key {right.id}" in err and "etl rotate-key" in err and "ETL_DATA_KEY_OLD" in err
    assert wrong not in err and key not in err
    assert _texts(url) == before  # not a run row, not a batch
    monkeypatch.setenv("ETL_DATA_KEY", key)
    assert _run(url, tmp_path, monkeypatch, capsys)[0] == 0


def test_a_run_without_a_key_on_an_encrypted_target_is_refused_and_writes_nothing(
        tmp_path, key, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _load(url, tmp_path, monkeypatch)
    before = _texts(url)
    monkeypatch.delenv("ETL_DATA_KEY")
    code, err = _run(url, tmp_path, monkeypatch, capsys)
    assert code == 2
    assert f"encrypted under data key {crypt.parse_key(key, 'k').id} and no key is set" in err
    assert _texts(url) == before
    assert _found(url, SECRETS) == []


def test_a_target_encrypted_before_0010_is_checked_against_its_values(tmp_path, key, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _load(url, tmp_path, monkeypatch)
    with sa.create_engine(url).begin() as conn:  # as migration 0010 leaves such a target
        conn.exec_driver_sql("DELETE FROM ingest_key")
    before = _texts(url)
    other = new_key()
    monkeypatch.setenv("ETL_DATA_KEY", other)
    code, err = _run(url, tmp_path, monkeypatch, capsys)
    assert code == 2 and f"holds values under key(s) {crypt.parse_key(key, 'k').id}" in err
    assert _texts(url) == before
    monkeypatch.setenv("ETL_DATA_KEY", key)
    assert _run(url, tmp_path, monkeypatch, capsys)[0] == 0
    assert _stored(url) is None  # nothing changed: nothing stored under the key yet
    source = sa.create_engine(f"sqlite:///{tmp_path / 'source.sqlite'}")
    with source.begin() as conn:  # a department's phone changes: a value is stored under the key
        conn.exec_driver_sql("UPDATE t_dept SET tel = '18600009999' WHERE id = 1")
    source.dispose()
    assert _run(url, tmp_path, monkeypatch, capsys)[0] == 0
    assert _stored(url)["keyId"] == crypt.parse_key(key, "k").id


def test_rows_prepared_under_another_key_are_refused_by_the_load(tmp_path, key, monkeypatch):
    """Airflow: the transform task encrypts, a load task on a worker with another key loads."""
    from etl.standard.clean import Audit

    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    engine = target.connect(url)
    m = _mapping(tmp_path, monkeypatch)
    p = pipeline.plan(engine, m, "03")
    audit = Audit()
    chunks = [pipeline.prepare(raw, p, audit) for raw in pipeline.extract_chunks(p)]
    monkeypatch.setenv("ETL_DATA_KEY", new_key())
    with pytest.raises(crypt.KeyMismatch, match=rf"unit_person\.idCardNo: 3 value\(s\) prepared for "
                                                rf"this load are under key {crypt.parse_key(key, 'k').id}"):
        pipeline.load(engine, p, iter(chunks), audit)
    engine.dispose()
    assert rows_of(url, "unit_person") == [] and rows_of(url, "ingest_key") == []
    assert [r["status"] for r in rows_of(url, "ingest_run")] == ["failed"]  # the failure is visible


def test_two_first_loads_with_different_keys_cannot_both_record_theirs(url, monkeypatch):
    import threading

    first, second = crypt.parse_key(new_key(), "ETL_DATA_KEY"), crypt.parse_key(new_key(), "ETL_DATA_KEY")
    engine = target.connect(url)
    target.upgrade(engine)
    now = clock.now()
    outcome: list[BaseException | None] = []

    def other() -> None:
        try:
            with engine.begin() as conn:
                crypt.claim(conn, second, "run 2", now)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    with engine.begin() as conn:
        crypt.claim(conn, first, "run 1", now)
        t = threading.Thread(target=other)
        t.start()
        t.join(2)
        assert t.is_alive()  # waits for the first load's transaction
    t.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], crypt.KeyMismatch), outcome
    assert f"under key {first.id}" in str(outcome[0])
    engine.dispose()
    assert (_stored(url)["keyId"], _stored(url)["setBy"]) == (first.id, "run 1")


def test_rotate_key_moves_the_fingerprint_and_the_old_key_is_refused_after(tmp_path, key, monkeypatch, capsys):
    from etl import cli

    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _load(url, tmp_path, monkeypatch)
    new = crypt.parse_key(new_key(), "new")
    monkeypatch.setenv("ETL_DATA_KEY", base64.b64encode(new.secret).decode())
    monkeypatch.setenv("ETL_DATA_KEY_OLD", key)
    assert cli.main(["rotate-key", "--target", url]) == 0
    row = _stored(url)
    assert (row["keyId"], row["fingerprint"], row["setBy"]) == (new.id, new.fingerprint, "etl rotate-key")
    assert _run(url, tmp_path, monkeypatch, capsys)[0] == 0
    monkeypatch.setenv("ETL_DATA_KEY", key)
    code, err = _run(url, tmp_path, monkeypatch, capsys)
    assert code == 2 and f"under key {new.id}" in err


def test_rotate_key_missing_an_old_key_changes_nothing(tmp_path, key, monkeypatch, capsys):
    from etl import cli

    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    _load(url, tmp_path, monkeypatch)
    before = _texts(url)
    monkeypatch.setenv("ETL_DATA_KEY", new_key())
    monkeypatch.setenv("ETL_DATA_KEY_OLD", new_key())
    assert cli.main(["rotate-key", "--target", url]) == 2
    assert "nothing was changed" in capsys.readouterr().err
    assert _texts(url) == before  # the stored key too


def test_a_task_asks_airflow_for_its_data_key_once_per_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26: each ask is two API round trips, and a shard asks for every dataset; the key
    (the Airflow variable `etl_data_key`, here through its environment variable) is asked once
    per task instance's try, and asked again by the next try or task."""
    from airflow.sdk.execution_time.context import set_current_context

    with set_current_context({}):  # what Airflow's task runner does for a task's run
        _asks_once_per_try(monkeypatch)
    monkeypatch.setenv("AIRFLOW_VAR_ETL_DATA_KEY", base64.b64encode(bytes([4]) * 32).decode())
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "3")
    assert crypt.data_key() is None  # the task is over: Airflow is not asked, AIRFLOW_CTX_* or not


def test_a_process_that_is_no_task_never_asks_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """AIRFLOW_CTX_* outlive `dag.test()` and pass to child processes (`etl serve`): no proof."""
    monkeypatch.delenv("ETL_DATA_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "dual_prevention_daily")
    monkeypatch.setenv("AIRFLOW_VAR_ETL_DATA_KEY", base64.b64encode(bytes([3]) * 32).decode())
    assert crypt.data_key() is None


def _asks_once_per_try(monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2))
    monkeypatch.delenv("ETL_DATA_KEY", raising=False)
    for name, value in {"DAG_ID": "dual_prevention_daily", "DAG_RUN_ID": "r1",
                        "TASK_ID": "ingest.load", "TRY_NUMBER": "1"}.items():
        monkeypatch.setenv(f"AIRFLOW_CTX_{name}", value)
    monkeypatch.setenv("AIRFLOW_VAR_ETL_DATA_KEY", one)
    first = crypt.data_key()
    assert first is not None and first.secret == bytes([1]) * 32
    monkeypatch.setenv("AIRFLOW_VAR_ETL_DATA_KEY", two)
    assert crypt.data_key() == first  # the same try: not asked again
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "2")
    again = crypt.data_key()
    assert again is not None and again.secret == bytes([2]) * 32  # the next try asks
    monkeypatch.delenv("AIRFLOW_VAR_ETL_DATA_KEY")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "ingest.transform")
    assert crypt.data_key() is None  # another task: asked, and there is none
