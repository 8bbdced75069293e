"""Small builders shared by pipeline tests: a unit's source table and its mapping file."""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from stdnum.cn import ric, uscc

from etl import target
from etl.mapping import load_mapping

ORG_A = "91320115MA1R7KX30X"


def org_no(base: str) -> str:
    """A valid USCC from 17 characters."""
    return base + uscc.calc_check_digit(base)


def id_card(base17: str) -> str:
    return base17 + ric.calc_check_digit(base17)


# GB 11643-1999 4.2: W_i = 2^(i-1) mod 11 for the 17 positions counted from the right (the
# check character is position 1); the check character is the one that makes the weighted
# sum = 1 (mod 11): remainder 0..10 -> 1 0 X 9 8 7 6 5 4 3 2.
GB11643_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
_GB11643_CHECK = "10X98765432"


def gb11643(base17: str) -> str:
    """An ID number from its first 17 digits, by the standard's rule (not python-stdnum's)."""
    return base17 + _GB11643_CHECK[sum(int(c) * w for c, w in zip(base17, GB11643_WEIGHTS)) % 11]


@cache
def every_area_code() -> frozenset[str]:
    """Every 6-digit code of GB/T 2260 in any era, as python-stdnum's table (from Wikipedia's
    lists of the codes) holds them: provinces, cities and counties, retired ones included."""
    from stdnum import numdb

    codes = set()
    for _, low, _high, _props, children in numdb.get("cn/loc").prefixes:
        codes.add(low + "0000")
        codes.update(low + sub for _, sub, _h, sub_props, _c in children if "county" in sub_props)
    return frozenset(codes)


def valid_by_gb11643(value: str) -> bool:
    """GB 11643 read from the standard: 17 digits, the check character, a real birth date, and
    an area code of GB/T 2260 in any era (numbers are assigned at registration, not birth)."""
    if len(value) != 18 or not value[:17].isdigit() or gb11643(value[:17]) != value:
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return value[:6] in every_area_code()


HIDDEN_DANGER_COLUMNS = ("id", "task_no", "reg_no", "kind", "level", "problem", "checker",
                         "check_date", "limit_date", "deal_man", "deal_date", "deal_info",
                         "accept_man", "accept_date", "accept_info", "modify_time", "del_flag")


def hidden_danger_row(i: int, **over) -> dict:
    row = {"id": i, "task_no": f"YH{i:08d}", "reg_no": f"3110320115{i:010d}", "kind": "设备类",
           "level": "一般事故隐患", "problem": f"安全阀校验过期 {i}", "checker": "张三",
           "check_date": "2024-04-16", "limit_date": "2024-05-16", "deal_man": "李四",
           "deal_date": "2024-05-10", "deal_info": "已整改", "accept_man": "王五",
           "accept_date": "2024-05-17", "accept_info": "整改验收合格",
           "modify_time": "2024-05-17 10:00:00", "del_flag": 0}
    row.update(over)
    return row


def write_source(url: str, table: str, rows: list[dict], columns=HIDDEN_DANGER_COLUMNS,
                 timestamps: tuple[str, ...] = ()) -> None:
    """(Re)create a source table holding exactly `rows` (all columns text but id, del_flag and
    the `timestamps` columns, which are TIMESTAMP)."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    t = sa.Table(table, meta, *[sa.Column(c, sa.Integer if c in ("id", "del_flag") else
                                          sa.DateTime if c in timestamps else sa.String(200))
                                for c in columns])
    with engine.begin() as conn:
        meta.drop_all(conn)
        meta.create_all(conn)
        if rows:
            conn.execute(t.insert(), rows)
    engine.dispose()


HIDDEN_DANGER_MAPPING = """\
unit: {{orgNo: "{org}", comName: {name}}}
source: {{url_env: {env}}}
datasets:
  "09":
    table: {table}
    key: [id]
    updated_at: modify_time
    deleted: {{column: del_flag, value: 1}}
    fields:
      taskNo: task_no
      regNo: reg_no
      troubleType: kind
      troubleLevel: level
      mainProblem: problem
      checkMan: checker
      checkDate: check_date
      limitDate: limit_date
      dealMan: deal_man
      dealDate: deal_date
      dealInfo: deal_info
      acceptMan: accept_man
      acceptDate: accept_date
      acceptInfo: accept_info
"""


def hidden_danger_mapping_text(org: str = ORG_A, env: str = "UNIT_A_SOURCE_URL",
                               table: str = "t_hidden_danger", name: str = "南京某某化工有限公司") -> str:
    """The mapping file of a unit whose hidden dangers (09) sit in `table` (see
    `hidden_danger_row`); the benchmark's units use it too."""
    return HIDDEN_DANGER_MAPPING.format(org=org, env=env, table=table, name=name)


def hidden_danger_mapping(tmp_path: Path, monkeypatch, source_url: str, org: str = ORG_A,
                          table: str = "t_hidden_danger", env: str = "UNIT_A_SOURCE_URL"):
    monkeypatch.setenv(env, source_url)
    p = tmp_path / f"unit_{org}.yaml"
    p.write_text(hidden_danger_mapping_text(org, env, table), encoding="utf-8")
    return load_mapping(p)


def query(url: str, sql: str) -> list[tuple]:
    """The rows of one statement on any database (a target, a source), as tuples."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def seed(url: str, ddl: str, insert: str, rows: list[dict]) -> None:
    """Create one source table (`ddl`) and fill it with `rows` through `insert` (named binds)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
            conn.execute(sa.text(insert), rows)
    finally:
        engine.dispose()


def rows_of(url: str, table: str, where: str = "") -> list[dict]:
    engine = target.connect(url)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table} {where}"))]
    engine.dispose()
    return out


QUIRKY_FIELDS = """\
    key: [id]
    fields:
      riskNo: code
      riskName: name
      riskType: kind
      registDate: reg_date
      checkDate: check_time
      inherentriskLevel: {{column: level, values: {{1: 重大风险, 2: 较大风险, 3: 一般风险, 4: 低风险}}}}
      remainriskLevel: {{value: 低风险}}
      controlLevel: {{value: 公司（厂）级}}
      dutyName: {{value: "{{unit.comName}}"}}
      dutyMan: person
      regNo: reg_no
"""
"""The key and fields of a risk-point dataset read from the quirky legacy table of
tests/test_extract.py (a format string: braces doubled)."""


BROKEN_MAPPING = """\
unit:
  orgNo: "91320115MA1R7KX30X"
  comName: 南京某某化工有限公司
source:
  url_env: BROKEN_UNIT_SOURCE_URL
datasets:
  "06":
    table: t_risk_point
    key: [id]
    fields:
      riskNumber: point_no
"""
"""A mapping that does not validate: a misspelt field and the required ones missing."""


# GB 32100-2015 4.2: 31 characters (no I, O, S, V, Z); W_i = 3^(i-1) mod 31 for positions 1..17
# from the left; the check character is C18 = 31 - (sum C_i * W_i mod 31), 31 written as 0.
GB32100_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
GB32100_WEIGHTS = [pow(3, i, 31) for i in range(17)]


def gb32100(base17: str) -> str:
    """A unified social credit code from its first 17 characters, by the standard's rule (not
    python-stdnum's, which etl uses)."""
    total = sum(GB32100_CHARS.index(c) * w for c, w in zip(base17, GB32100_WEIGHTS))
    return base17 + GB32100_CHARS[(31 - total % 31) % 31]


def make_tls(folder: Path, ca_name: str) -> tuple[Path, Path, Path]:
    """A CA named `ca_name` and a server certificate it signs for localhost and 127.0.0.1, as
    PEM files in `folder`: (ca, cert, key); the key readable by its owner only."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(ca_name)).issuer_name(name(ca_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                  critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(server.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths
