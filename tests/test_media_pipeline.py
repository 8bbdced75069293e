"""Attachments in the pipeline (issue 15): M fields whose mapping says `file:` collect the file
into the media store; `ingest_media` records it; a refused file rejects its row only; a changed
file makes the record U; an unreachable file server fails only its dataset. Real files on disk,
real source and target databases (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl import pipeline, target
from etl.common import clock
from etl.common.errors import MappingError
from etl.mapping import load_mapping
from etl.media.files import MediaStore
from etl.onboarding import sample_files
from helpers import ORG_A, org_no, rows_of

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=clock.CST)
ORG_B = org_no("91320506MA1W3L8P7")

RULES_DDL = ("CREATE TABLE t_rule (id INTEGER PRIMARY KEY, title VARCHAR(100), "
             "attach_path VARCHAR(300), upload_date VARCHAR(20))")
MAP_DDL = {
    "sqlite": "CREATE TABLE t_map (id INTEGER PRIMARY KEY, kind VARCHAR(20), map_name VARCHAR(200), "
              "map_bytes BLOB, upload_date VARCHAR(20))",
    "postgresql": "CREATE TABLE t_map (id INTEGER PRIMARY KEY, kind VARCHAR(20), map_name VARCHAR(200), "
                  "map_bytes BYTEA, upload_date VARCHAR(20))",
    "mysql": "CREATE TABLE t_map (id INTEGER PRIMARY KEY, kind VARCHAR(20), map_name VARCHAR(200), "
             "map_bytes LONGBLOB, upload_date VARCHAR(20))",
}

RULES_MAPPING = """\
unit: {{orgNo: "{org}", comName: {name}}}
source: {{url_env: {env}}}
datasets:
  "04":
    table: t_rule
    key: [id]
    fields:
      fileName: title
      fileAppendix: {{column: attach_path, file: {file}}}
      uploadDate: upload_date
"""

MAP_MAPPING = """\
unit: {{orgNo: "{org}", comName: 南京某某化工有限公司}}
source: {{url_env: {env}}}
datasets:
  "08":
    table: t_map
    key: [id]
    fields:
      riskfileType: kind
      riskFile: {{column: map_name, file: {{blob: map_bytes}}}}
      uploadDate: upload_date
"""


@pytest.fixture(autouse=True)
def media_store(tmp_path, monkeypatch) -> Path:
    store = tmp_path / "media"
    monkeypatch.setenv("ETL_MEDIA_URL", str(store))
    return store


def _source(tmp_path: Path, name: str, rows: list[dict]) -> str:
    url = f"sqlite:///{tmp_path / name}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS t_rule")
        conn.exec_driver_sql(RULES_DDL)
        if rows:
            conn.execute(sa.text("INSERT INTO t_rule VALUES (:id, :title, :attach_path, :upload_date)"), rows)
    engine.dispose()
    return url


def _rule(i: int, path: str) -> dict:
    return {"id": i, "title": f"安全管理制度 {i}", "attach_path": path, "upload_date": "2024-05-01"}


def _mapping(tmp_path: Path, monkeypatch, url: str, file: str, *, org: str = ORG_A,
             env: str = "UNIT_A_SOURCE_URL", name: str = "南京某某化工有限公司"):
    monkeypatch.setenv(env, url)
    p = tmp_path / f"unit_{org}.yaml"
    p.write_text(RULES_MAPPING.format(org=org, env=env, file=file, name=name), encoding="utf-8")
    return load_mapping(p)


def _run(db_url: str, mapping, tx: str = "04", **kw):
    engine = target.connect(db_url)
    try:
        return pipeline.run_dataset(engine, mapping, tx, **{"now": NOW, **kw})
    finally:
        engine.dispose()


def _files(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _balanced(r) -> bool:
    return r.counts.balanced() and r.status == "success"


# --- mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("file, problem", [
    ("{base: /x, blob: b}", "exactly one of base"),
    ("{}", "exactly one of base"),
    ('{base: "https://u:secret@files.example/docs"}', "holds a password (user info)"),
    ('{base: "https://files.example/docs?token=abc"}', "query parameter 'token'"),
    ("{base: /x, max_mb: 0}", "max_mb"),
    ("{base: /x, where: y}", "unknown key 'where'"),
])
def test_a_bad_file_rule_is_refused_with_its_key(tmp_path, monkeypatch, file, problem):
    with pytest.raises(MappingError) as e:
        _mapping(tmp_path, monkeypatch, "sqlite:///x.sqlite", file)
    text = "\n".join(e.value.problems)
    assert "datasets.04.fields.fileAppendix" in text and problem in text
    assert "secret" not in text and "abc" not in text


def test_file_only_on_m_fields(tmp_path):
    p = tmp_path / "u.yaml"
    p.write_text(RULES_MAPPING.format(org=ORG_A, env="E", name="x", file="{base: /x}").replace(
        "fileName: title", "fileName: {column: title, file: {base: /x}}"), encoding="utf-8")
    with pytest.raises(MappingError) as e:
        load_mapping(p)
    assert any("[datasets.04.fields.fileName.file]" in x and "only for multimedia (M) fields "
               "(fileAppendix)" in x for x in e.value.problems)


def test_a_file_rule_needs_a_column_and_a_blob_column_is_read(tmp_path, monkeypatch):
    with pytest.raises(MappingError) as e:
        p = tmp_path / "u.yaml"
        p.write_text(MAP_MAPPING.format(org=ORG_A, env="E").replace(
            "{column: map_name, file: {blob: map_bytes}}", "{value: x, file: {blob: map_bytes}}"),
            encoding="utf-8")
        load_mapping(p)
    assert any("file: needs column:" in x for x in e.value.problems)
    p.write_text(MAP_MAPPING.format(org=ORG_A, env="E"), encoding="utf-8")
    assert "map_bytes" in load_mapping(p).datasets["08"].columns()


def test_a_mapping_without_file_keeps_the_name_as_text(tmp_path, monkeypatch, sqlite_url):
    url = _source(tmp_path, "s.sqlite", [_rule(1, "制度/XX 管理制度.doc")])
    p = tmp_path / "plain.yaml"
    monkeypatch.setenv("UNIT_A_SOURCE_URL", url)
    p.write_text(RULES_MAPPING.format(org=ORG_A, env="UNIT_A_SOURCE_URL", name="x", file="{}")
                 .replace("{column: attach_path, file: {}}", "attach_path"), encoding="utf-8")
    r = _run(sqlite_url, load_mapping(p))
    assert r.counts.inserted == 1
    assert rows_of(sqlite_url, "safety_rule")[0]["fileAppendix"] == "制度/XX 管理制度.doc"
    assert rows_of(sqlite_url, "ingest_media") == []


# --- a path column on a local folder ---------------------------------------------------------


def test_path_column_collects_files_keeps_the_name_and_records_them(
        tmp_path, monkeypatch, sqlite_url, media_store):
    docx, pdf = sample_files.docx_bytes("制度一"), sample_files.pdf_bytes("rule two")
    folder = _files(tmp_path / "unit_files", {"制度/XX 管理制度.docx": docx, "制度/2024/规程 #2.pdf": pdf})
    url = _source(tmp_path, "s.sqlite", [_rule(1, "制度/XX 管理制度.docx"),
                                          _rule(2, "制度\\2024\\规程 #2.pdf")])  # Windows separators
    monkeypatch.setenv("UNIT_A_FILES", str(folder))
    m = _mapping(tmp_path, monkeypatch, url, "{base_env: UNIT_A_FILES}")
    r = _run(sqlite_url, m)
    assert (r.counts.inserted, r.counts.rejected) == (2, 0) and _balanced(r)
    names = {row["fileName"]: row["fileAppendix"] for row in rows_of(sqlite_url, "safety_rule")}
    assert names == {"安全管理制度 1": "XX 管理制度.docx", "安全管理制度 2": "规程 #2.pdf"}
    media = {row["name"]: row for row in rows_of(sqlite_url, "ingest_media")}
    assert set(media) == {"XX 管理制度.docx", "规程 #2.pdf"}
    one = media["XX 管理制度.docx"]
    assert (one["sha256"], one["size"], one["field"], one["orgNo"], one["txCode"]) == (
        _sha(docx), len(docx), "fileAppendix", ORG_A, "04")
    assert one["mediaType"].endswith("wordprocessingml.document")
    assert one["location"].endswith("/制度/XX 管理制度.docx") and one["sourceSize"] == len(docx)
    assert media["规程 #2.pdf"]["mediaType"] == "application/pdf"
    store = MediaStore(str(media_store))
    assert Path(store.path_of(_sha(pdf))).read_bytes() == pdf


def test_two_units_with_an_identical_file_store_it_once(tmp_path, monkeypatch, sqlite_url, media_store):
    jpg = sample_files.jpeg_bytes()
    a = _files(tmp_path / "a_files", {"图/a.jpg": jpg})
    b = _files(tmp_path / "b_files", {"b 的照片.jpg": jpg})
    ua = _source(tmp_path, "a.sqlite", [_rule(1, "图/a.jpg")])
    ub = _source(tmp_path, "b.sqlite", [_rule(7, "b 的照片.jpg")])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ma = _mapping(tmp_path / "a", monkeypatch, ua, f"{{base: '{a}'}}")
    mb = _mapping(tmp_path / "b", monkeypatch, ub, f"{{base: '{b}'}}", org=ORG_B, env="UNIT_B_URL")
    assert _run(sqlite_url, ma).counts.inserted == 1
    assert _run(sqlite_url, mb).counts.inserted == 1
    media = rows_of(sqlite_url, "ingest_media")
    assert {(r["orgNo"], r["sha256"]) for r in media} == {(ORG_A, _sha(jpg)), (ORG_B, _sha(jpg))}
    stored = [p for p in media_store.rglob("*.jpg")]
    assert len(stored) == 1 and stored[0].read_bytes() == jpg


def test_refused_files_reject_only_their_rows(tmp_path, monkeypatch, sqlite_url, media_store):
    pdf = sample_files.pdf_bytes()
    folder = _files(tmp_path / "f", {
        "ok.pdf": pdf,
        "lies.docx": sample_files.png_bytes(),          # a PNG named .docx
        "big.pdf": sample_files.pdf_bytes("x" * 3000) + b"\n%" + b"0" * (2 * 1024 * 1024),
        "notes.pdf": b"just some text, not a pdf",
    })
    rows = [_rule(1, "ok.pdf"), _rule(2, "missing.pdf"), _rule(3, "lies.docx"), _rule(4, "big.pdf"),
            _rule(5, "notes.pdf"), _rule(6, "../etc/passwd.pdf")]
    url = _source(tmp_path, "s.sqlite", rows)
    m = _mapping(tmp_path, monkeypatch, url, f"{{base: '{folder}', max_mb: 1}}")
    r = _run(sqlite_url, m)
    assert (r.counts.extracted, r.counts.inserted, r.counts.rejected) == (6, 1, 5) and _balanced(r)
    rejects = {x["sourceKey"]: (x["field"], x["rule"], x["message"])
               for x in rows_of(sqlite_url, "ingest_reject")}
    assert {k: v[:2] for k, v in rejects.items()} == {
        "2": ("fileAppendix", "file_missing"), "3": ("fileAppendix", "file_type"),
        "4": ("fileAppendix", "file_size"), "5": ("fileAppendix", "file_type"),
        "6": ("fileAppendix", "file_path")}
    assert "missing.pdf" in rejects["2"][2] and "no such file" in rejects["2"][2]
    assert "PNG" in rejects["3"][2] and ".docx" in rejects["3"][2]
    assert "1 MB" in rejects["4"][2]
    assert [x["name"] for x in rows_of(sqlite_url, "ingest_media")] == ["ok.pdf"]
    assert len(list(media_store.rglob("*.pdf"))) == 1  # nothing of the refused files kept


def test_a_changed_file_makes_the_record_u_and_an_unchanged_rerun_writes_nothing(
        tmp_path, monkeypatch, sqlite_url):
    folder = _files(tmp_path / "f", {"制度.pdf": sample_files.pdf_bytes("v1")})
    url = _source(tmp_path, "s.sqlite", [_rule(1, "制度.pdf"), _rule(2, "制度.pdf")])
    m = _mapping(tmp_path, monkeypatch, url, f"{{base: '{folder}'}}")
    assert _run(sqlite_url, m).counts.inserted == 2
    again = _run(sqlite_url, m)
    assert (again.counts.unchanged, again.counts.batches) == (2, {})
    before = {r["ID"]: r for r in rows_of(sqlite_url, "ingest_media")}
    v2 = sample_files.pdf_bytes("version two, same name")
    (folder / "制度.pdf").write_bytes(v2)
    os.utime(folder / "制度.pdf", ns=(1, 1_700_000_000_000_000_000))
    r = _run(sqlite_url, m, now=datetime(2024, 6, 2, 10, 0, tzinfo=clock.CST))
    assert (r.counts.updated, r.counts.inserted, r.counts.unchanged) == (2, 0, 0) and _balanced(r)
    assert list(r.counts.batches) == ["U"]
    after = {r["ID"]: r for r in rows_of(sqlite_url, "ingest_media")}
    assert set(after) == set(before) and {a["sha256"] for a in after.values()} == {_sha(v2)}
    assert all(a["runId"] != before[k]["runId"] for k, a in after.items())
    assert {x["fileAppendix"] for x in rows_of(sqlite_url, "safety_rule")} == {"制度.pdf"}


def test_an_unreachable_base_fails_only_that_dataset(tmp_path, monkeypatch, sqlite_url):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = _source(tmp_path, "s.sqlite", [_rule(1, "a.pdf")])
    monkeypatch.setenv("UNIT_A_FILES", f"http://user:hunter2@127.0.0.1:{port}/docs")
    m = _mapping(tmp_path, monkeypatch, url, "{base_env: UNIT_A_FILES}")
    gone = _files(tmp_path / "b", {"a.pdf": sample_files.pdf_bytes()})
    (tmp_path / "bm").mkdir()
    mb = _mapping(tmp_path / "bm", monkeypatch, _source(tmp_path, "b.sqlite", [_rule(1, "a.pdf")]),
                  f"{{base: '{gone}'}}", org=ORG_B, env="UNIT_B_URL")
    [ra] = pipeline.run_mapping(target.connect(sqlite_url), m, now=NOW)
    [rb] = pipeline.run_mapping(target.connect(sqlite_url), mb, now=NOW)
    assert ra.status == "failed" and "cannot be reached" in ra.message
    assert "hunter2" not in ra.message and f"127.0.0.1:{port}" in ra.message
    assert rb.status == "success" and rb.counts.inserted == 1
    runs = {r["orgNo"]: r for r in rows_of(sqlite_url, "ingest_run")}
    assert runs[ORG_A]["status"] == "failed" and "hunter2" not in runs[ORG_A]["message"]
    assert rows_of(sqlite_url, "safety_rule", f"WHERE \"orgNo\" = '{ORG_A}'") == []


def test_an_unmounted_folder_fails_the_dataset(tmp_path, monkeypatch, sqlite_url):
    url = _source(tmp_path, "s.sqlite", [_rule(1, "a.pdf")])
    m = _mapping(tmp_path, monkeypatch, url, f"{{base: '{tmp_path / 'not_mounted'}'}}")
    [r] = pipeline.run_mapping(target.connect(sqlite_url), m, now=NOW)
    assert r.status == "failed" and "does not exist" in r.message


# --- a BLOB column on every database ---------------------------------------------------------


def _blob_source(url: str, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    kind = engine.dialect.name if engine.dialect.name != "mariadb" else "mysql"
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS t_map")
        conn.exec_driver_sql(MAP_DDL[kind])
        conn.execute(sa.text("INSERT INTO t_map VALUES (:id, :kind, :map_name, :map_bytes, :upload_date)"),
                     rows)
    engine.dispose()


def test_blob_column_on_each_database(db_url, tmp_path, monkeypatch, sqlite_url):
    png, jpg = sample_files.png_bytes(), sample_files.jpeg_bytes()
    rows = [{"id": 1, "kind": "风险四色分布图", "map_name": "四色图.png", "map_bytes": png, "upload_date": "2024-05-01"},
            {"id": 2, "kind": "设备风险告知牌", "map_name": "告知牌.jpg", "map_bytes": jpg, "upload_date": "2024-05-01"},
            {"id": 3, "kind": "岗位风险告知卡", "map_name": "告知卡.pdf", "map_bytes": None, "upload_date": "2024-05-01"},
            {"id": 4, "kind": "岗位风险告知卡", "map_name": "卡.pdf", "map_bytes": jpg, "upload_date": "2024-05-01"}]
    _blob_source(db_url, rows)
    monkeypatch.setenv("UNIT_A_SOURCE_URL", db_url)
    p = tmp_path / "blob.yaml"
    p.write_text(MAP_MAPPING.format(org=ORG_A, env="UNIT_A_SOURCE_URL"), encoding="utf-8")
    m = load_mapping(p)
    r = _run(sqlite_url, m, "08")
    assert (r.counts.inserted, r.counts.rejected) == (2, 2) and _balanced(r)
    assert {x["riskFile"] for x in rows_of(sqlite_url, "risk_gallery")} == {"四色图.png", "告知牌.jpg"}
    media = {x["name"]: x for x in rows_of(sqlite_url, "ingest_media")}
    assert {k: (v["sha256"], v["mediaType"]) for k, v in media.items()} == {
        "四色图.png": (_sha(png), "image/png"), "告知牌.jpg": (_sha(jpg), "image/jpeg")}
    assert media["四色图.png"]["location"] == "column map_bytes (BLOB)"
    assert {x["rule"] for x in rows_of(sqlite_url, "ingest_reject")} == {"file_missing", "file_type"}
    assert _run(sqlite_url, m, "08").counts.batches == {}


# --- an HTTP file server on loopback ----------------------------------------------------------


def test_path_column_on_an_http_file_server(tmp_path, monkeypatch, sqlite_url, media_store):
    from urllib.parse import quote

    from test_media import gets, http_files

    pdf, docx = sample_files.pdf_bytes("over http"), sample_files.docx_bytes("网上的制度")
    root = _files(tmp_path / "www", {"docs/制度/安全 #1.pdf": pdf, "docs/制度/规程.docx": docx})
    url = _source(tmp_path, "s.sqlite", [_rule(1, "制度/安全 #1.pdf"), _rule(2, "制度/规程.docx"),
                                          _rule(3, "制度/没有.pdf")])
    with http_files(root) as (base, server):
        monkeypatch.setenv("UNIT_A_FILES", base.replace("127.0.0.1", "collector:pw-9x@127.0.0.1")
                           .removesuffix("/files") + "/docs")
        m = _mapping(tmp_path, monkeypatch, url, "{base_env: UNIT_A_FILES}")
        r = _run(sqlite_url, m)
        assert (r.counts.inserted, r.counts.rejected) == (2, 1) and _balanced(r)
        media = {x["name"]: x for x in rows_of(sqlite_url, "ingest_media")}
        assert {k: v["sha256"] for k, v in media.items()} == {"安全 #1.pdf": _sha(pdf), "规程.docx": _sha(docx)}
        assert all("pw-9x" not in v["location"] and v["location"].startswith("http://collector@127.0.0.1")
                   for v in media.values())
        [reject] = rows_of(sqlite_url, "ingest_reject")
        assert (reject["rule"], reject["sourceKey"]) == ("file_missing", "3") and "HTTP 404" in reject["message"]
        stored = [quote(n) for n in ("安全 #1.pdf", "规程.docx")]
        got = [gets(server, n) for n in stored]
        assert got == [1, 1]
        again = _run(sqlite_url, m)  # unchanged: the quick-skip index, no file read again
        assert again.counts.batches == {} and [gets(server, n) for n in stored] == got


# --- etl check ---------------------------------------------------------------------------------


def test_check_shows_file_fields_and_warns_on_an_unreachable_base(tmp_path, monkeypatch, capsys):
    from etl.cli import main

    url = _source(tmp_path, "s.sqlite", [_rule(1, "a.pdf")])
    m = _mapping(tmp_path, monkeypatch, url, f"{{base: '{tmp_path / 'not_mounted'}', max_mb: 5}}")
    assert main(["check", str(m.path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "fileAppendix" in x)
    assert "column + file" in line and f"attach_path (files under {tmp_path / 'not_mounted'})" in line
    assert f"warning: {m.path} [datasets.04.fields.fileAppendix.file] files cannot be reached now" in out
    assert "does not exist" in out
    monkeypatch.setenv("UNIT_A_FILES", "sftp://u:Pa55-word@127.0.0.1:1/x")
    m = _mapping(tmp_path, monkeypatch, url, "{base_env: UNIT_A_FILES}")
    assert main(["check", str(m.path)]) == 0
    out = capsys.readouterr().out
    assert "files from env UNIT_A_FILES" in out and "cannot be reached" in out and "Pa55-word" not in out
    assert main(["check", "--offline", str(m.path)]) == 0
    assert "cannot be reached" not in capsys.readouterr().out


# --- the demo ----------------------------------------------------------------------------------


def test_demo_units_collect_their_attachments_once(tmp_path, sqlite_url, media_store):
    from etl.onboarding.demo_data import (ORG_A as DEMO_A, ORG_B as DEMO_B, SHARED_NOTICE, UNIT_A,
                                          UNIT_B, make_demo_sources)

    made = make_demo_sources(tmp_path / "var")
    project = Path(__file__).resolve().parent.parent
    engine = target.connect(sqlite_url)
    for unit in (UNIT_A, UNIT_B):
        text = (project / "mappings" / f"{unit}.yaml").read_text(encoding="utf-8")
        text = text.replace(f"sqlite:///var/{unit}.sqlite", f"sqlite:///{made[unit]}").replace(
            "base: var/", f"base: {tmp_path / 'var'}/")
        (tmp_path / f"{unit}.yaml").write_text(text, encoding="utf-8")
        results = pipeline.run_mapping(engine, load_mapping(tmp_path / f"{unit}.yaml"), ["04", "05", "08"], now=NOW)
        assert all(r.status == "success" and r.counts.rejected == 0 for r in results)
    engine.dispose()
    media = rows_of(sqlite_url, "ingest_media")
    by = {(r["orgNo"], r["txCode"], r["field"]) for r in media}
    assert by == {(DEMO_A, "04", "fileAppendix"), (DEMO_A, "05", "trainFile"), (DEMO_A, "08", "riskFile"),
                  (DEMO_B, "04", "fileAppendix"), (DEMO_B, "08", "riskFile")}
    assert {r["mediaType"].rsplit("/", 1)[-1] for r in media} >= {
        "vnd.openxmlformats-officedocument.wordprocessingml.document", "pdf", "jpeg", "png"}
    shared = [r for r in media if r["sha256"] == _sha(SHARED_NOTICE)]
    assert {r["orgNo"] for r in shared} == {DEMO_A, DEMO_B}
    assert len(list(media_store.rglob(f"{_sha(SHARED_NOTICE)}.*"))) == 1
    names = {r["riskFile"] for r in rows_of(sqlite_url, "risk_gallery")}
    assert "锅炉房设备风险告知牌.pdf" in names and not any("/" in n for n in names)


# --- Airflow -----------------------------------------------------------------------------------


@pytest.mark.airflow
@pytest.mark.parametrize("staging", ["folder", "target"])
def test_weekly_dag_collects_attachments_through_staging(airflow_db, staging, tmp_path, monkeypatch,
                                                         request, media_store):
    """The transform task fetches the files, the hidden columns ride through staging (Parquet
    files into a SQLite target, or `ingest_stage` in a PostgreSQL target), the load task
    writes ingest_media."""
    sqlite_url = request.getfixturevalue("sqlite_url" if staging == "folder" else "pg_url")
    from zoneinfo import ZoneInfo

    from airflow.dag_processing.dagbag import DagBag

    jpg, png = sample_files.jpeg_bytes(), sample_files.png_bytes()
    folder = _files(tmp_path / "files", {"制度/a.pdf": sample_files.pdf_bytes("a"), "制度/b.pdf": b"not a pdf"})
    url = _source(tmp_path, "s.sqlite", [_rule(1, "制度/a.pdf"), _rule(2, "制度/b.pdf")])
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    a = _mapping(tmp_path, monkeypatch, url, f"{{base: '{folder}'}}")
    (mappings / "单位甲.yaml").write_text(a.path.read_text(encoding="utf-8"), encoding="utf-8")
    blob_url = f"sqlite:///{tmp_path / 'blob.sqlite'}"
    _blob_source(blob_url, [
        {"id": 1, "kind": "风险四色分布图", "map_name": "图.jpg", "map_bytes": jpg, "upload_date": "2024-05-01"},
        {"id": 2, "kind": "设备风险告知牌", "map_name": "牌.png", "map_bytes": png, "upload_date": "2024-05-01"}])
    monkeypatch.setenv("UNIT_B_URL", blob_url)
    (mappings / "单位乙.yaml").write_text(MAP_MAPPING.format(org=ORG_B, env="UNIT_B_URL"), encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(mappings))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    monkeypatch.setenv("ETL_REPORTS_DIR", str(tmp_path / "report"))
    if staging == "target":
        monkeypatch.setenv("ETL_STAGING_URL", "target")
    else:
        monkeypatch.delenv("ETL_STAGING_URL", raising=False)
        monkeypatch.setenv("ETL_STAGING_DIR", str(tmp_path / "staging"))
    dag = DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags")).dags["dual_prevention_weekly"]
    dag.test(logical_date=datetime(2025, 3, 3, tzinfo=ZoneInfo("Asia/Shanghai")),
             run_conf={"tx_codes": ["04", "08"], "mode": "full"})
    runs = {(r["orgNo"], r["txCode"]): r for r in rows_of(sqlite_url, "ingest_run")}
    assert {k: (r["status"], r["inserted"], r["rejected"]) for k, r in runs.items()} == {
        (ORG_A, "04"): ("success", 1, 1), (ORG_B, "08"): ("success", 2, 0)}
    media = {(r["orgNo"], r["name"]): r["sha256"] for r in rows_of(sqlite_url, "ingest_media")}
    assert media == {(ORG_A, "a.pdf"): _sha(sample_files.pdf_bytes("a")), (ORG_B, "图.jpg"): _sha(jpg),
                     (ORG_B, "牌.png"): _sha(png)}
    [reject] = rows_of(sqlite_url, "ingest_reject")
    assert (reject["orgNo"], reject["field"], reject["rule"]) == (ORG_A, "fileAppendix", "file_type")
    assert all(runs[k]["runId"] == r["runId"] for k in runs
               for r in rows_of(sqlite_url, "ingest_media") if (r["orgNo"], r["txCode"]) == k)


# --- the report site ---------------------------------------------------------------------------


def test_unit_page_links_to_the_stored_attachments(tmp_path, monkeypatch, sqlite_url, media_store):
    import re
    from urllib.parse import unquote

    from etl.report import site

    pdf, jpg = sample_files.pdf_bytes("linked"), sample_files.jpeg_bytes()
    folder = _files(tmp_path / "f", {"<img src=x onerror=alert(1)>.pdf": pdf, "照片 & 签到.jpg": jpg})
    url = _source(tmp_path, "s.sqlite", [_rule(1, "<img src=x onerror=alert(1)>.pdf"), _rule(2, "照片 & 签到.jpg")])
    m = _mapping(tmp_path, monkeypatch, url, f"{{base: '{folder}'}}")
    _run(sqlite_url, m)
    out = tmp_path / "report"
    engine = target.connect(sqlite_url)
    site.build(engine, [m], out)
    engine.dispose()
    page = (out / "units" / f"{site.unit_key(ORG_A)}.html").read_text(encoding="utf-8")
    assert "<h3>附件</h3>" in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in page and "照片 &amp; 签到.jpg" in page
    hrefs = re.findall(r'<a href="([^"]+)">([^<]+)</a>', page)
    linked = {name: (out / "units" / unquote(href.replace("&amp;", "&"))).resolve()
              for href, name in hrefs if "media" in href}
    assert {n: p.read_bytes() for n, p in linked.items()} == {
        "&lt;img src=x onerror=alert(1)&gt;.pdf": pdf, "照片 &amp; 签到.jpg": jpg}
    assert all(not href.startswith("/") for href, _ in hrefs)


def test_conn_id_base_from_an_airflow_connection(tmp_path, monkeypatch, sqlite_url):
    """`file: {conn_id: ...}`: the connection's URI is the base, its password masked."""
    from test_media import http_files

    pdf = sample_files.pdf_bytes("from a connection")
    root = _files(tmp_path / "www", {"docs/a.pdf": pdf})
    url = _source(tmp_path, "s.sqlite", [_rule(1, "a.pdf")])
    with http_files(root) as (base, _):
        port = base.split(":")[2].split("/")[0]
        monkeypatch.setenv("AIRFLOW_CONN_UNIT_A_FILES", f"http://collector:Conn-pw-7@127.0.0.1:{port}/docs")
        m = _mapping(tmp_path, monkeypatch, url, "{conn_id: unit_a_files}")
        r = _run(sqlite_url, m)
    assert r.counts.inserted == 1 and _balanced(r)
    [row] = rows_of(sqlite_url, "ingest_media")
    assert row["sha256"] == _sha(pdf) and "Conn-pw-7" not in row["location"]
    assert row["location"].endswith("/docs/a.pdf")
