"""The register: `etl onboard units.csv --extends systems/x.yaml` turns a list of units that run
one vendor's system (one row each: orgNo, comName, and the Airflow connection or environment
variable holding its source URL) into one unit file each, `<orgNo>.yaml`, that extends the
system's template.

Why `<orgNo>.yaml`: the orgNo is the unit's identity, 18 characters from [0-9A-Z] once checked,
so a file name made from it is safe on every file system and cannot collide, where two units'
Chinese names may (分公司 of one group) or be unfit for a path.

Rows that are wrong are refused, each on one line with its line number, and the good rows are
still written: fixing the refused rows and running again writes only them (a file that exists
with the same content is left as it is). Exit 2 when any row was refused.

What else differs between units of one system (the attachments' base, a schema, a time zone)
the template declares under `per_unit:`, and the register gives as columns of those names
(`PATH_HEADERS` adds Chinese ones); a column neither the register nor the template names is
warned about. Each file starts with a line recording the register, the row and the sha256 of
what follows it: running again on a changed register rewrites the files still as onboard wrote
them ("updated") and leaves alone, named, a file edited by hand or not written by onboard,
unless --overwrite.

A register is bounded by what it expands to, not only by its file size: lines, rows, columns
and cells while it is read, and for an XLSX (a zip) the uncompressed sizes its zip declares,
checked before openpyxl reads a byte (a 1 MB workbook can inflate to 1 GB). Over a bound:
one line naming the register and the bound, exit 2, nothing written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etl.common import private
from etl.common.errors import ConfigError, MappingError

MAX_REGISTER_BYTES = 50_000_000   # a province's register is a few MB
MAX_ROWS = 200_000                # units (rows that are not blank)
MAX_LINES = 1_048_576             # lines read, blank ones included: Excel's own limit
MAX_COLUMNS = 1_000               # cells in one row (a register has a few columns)
MAX_CELLS = 10_000_000            # cells read in all, blanks within rows included
MAX_CELL_CHARS = 32_767           # characters in one cell: Excel's own limit
MAX_XLSX_BYTES = 20_000_000       # an .xlsx file: a 200,000-unit register is ~6 MB
#: What an .xlsx may expand to: its parts' uncompressed sizes as its zip declares them (Python's
#: zipfile never reads past a part's declared size). A 200,000-row register is ~100 MB.
MAX_XLSX_EXPANDED = 160_000_000
#: What openpyxl reads whole, and turns into objects (the worksheets it reads row by row, images
#: not at all): the shared strings (64 MB take ~350 MB of memory) and any other part (8 MB: a
#: 62 MB styles.xml took 17 s and 820 MB; Excel's 64,000 cell formats are a few MB).
MAX_XLSX_STRINGS = 64_000_000
MAX_XLSX_PART = 8_000_000
MAX_XLSX_PARTS = 10_000
COLUMNS = ("orgNo", "comName", "conn_id", "url_env")
#: Header spellings accepted for each column (compared without case, spaces, _ - and brackets).
HEADERS: dict[str, tuple[str, ...]] = {
    "orgNo": ("orgNo", "org_no", "uscc", "统一社会信用代码", "社会信用代码", "信用代码"),
    "comName": ("comName", "com_name", "单位名称", "使用单位名称", "企业名称", "使用单位", "名称"),
    "conn_id": ("conn_id", "connection", "Airflow连接", "连接", "连接ID", "连接标识"),
    "url_env": ("url_env", "环境变量", "URL环境变量", "连接环境变量", "源环境变量"),
}
#: Header spellings accepted for a per-unit setting beside its name and its key, by the key.
PATH_HEADERS: dict[str, tuple[str, ...]] = {
    "files.base": ("附件目录", "附件路径", "附件地址", "附件根目录", "文件目录"),
    "files.base_env": ("附件环境变量",),
    "files.conn_id": ("附件连接",),
    "source.schema": ("模式", "数据库模式", "架构"),
    "source.timezone": ("时区",),
    "source.statement_timeout_s": ("查询超时",),
    "source.connect_timeout_s": ("连接超时",),
    "source.require_tls": ("要求TLS",),
}
#: A unit file's first line, as onboard writes it: the sha256 is that of the rest of the file.
MARK = re.compile(rb"^# Written by etl onboard from .* \(sha256:([0-9a-f]{64})\)\r?$")
#: The first line of a file an onboard before the sha256 wrote.
LEGACY_MARK = "# Written by `etl onboard`: this unit's own keys; its datasets come from the template.\n"
CONN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")   # Airflow's rule for a connection id
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
COM_NAME_LENGTH = 200                                 # the standard's comName (A.2)


def _norm(header: str) -> str:
    return re.sub(r"[\s_\-()（）]", "", header).casefold()


_BY_HEADER = {_norm(h): col for col, names in HEADERS.items() for h in names}


@dataclass
class Row:
    line: int
    values: dict[str, str]
    numeric_org: bool = False  # Excel held the orgNo as a number (digits lost past 15)


@dataclass
class Outcome:
    written: list[Path]
    unchanged: list[Path]
    refused: list[str]
    updated: list[Path] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)  # one line each: the file and why
    warnings: list[str] = field(default_factory=list)


# --- reading the register -----------------------------------------------------------------------


def read_register(path: Path) -> list[Row]:
    """The register's rows with their line numbers (CSV: UTF-8 with or without BOM, or GB18030
    as Excel in China saves it; XLSX: the first sheet). The header row names the columns."""
    return read_register_with(path, {})[0]


def read_register_with(path: Path, settings: dict[str, tuple[str, ...]]) -> tuple[list[Row], list[str]]:
    """`read_register`, with the per-unit settings' columns too (setting name -> header
    spellings; the value under the name), and the headers of the columns it ignores."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such register file: give a .csv or .xlsx of units")
    if path.stat().st_size > MAX_REGISTER_BYTES:
        raise ConfigError(f"{path}: more than {MAX_REGISTER_BYTES:,} bytes: is this a register of units?")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        lines = _bounded(path, _xlsx_lines(path))
    else:
        lines = _bounded(path, _csv_lines(path))
    try:
        header_line, header = next(lines)
    except StopIteration:
        raise ConfigError(f"{path}: empty: the first row names the columns "
                          f"({', '.join(COLUMNS)})") from None
    by_header = {**{_norm(h): name for name, spellings in settings.items() for h in spellings},
                 **_BY_HEADER}
    columns: dict[int, str] = {}
    ignored: list[str] = []
    for i, name in enumerate(header):
        col = by_header.get(_norm(str(name or "")))
        if col is None and _text(name):
            ignored.append(_text(name)[:60])
        if col and col in columns.values():
            raise ConfigError(f"{path} line {header_line}: two columns are {col}: keep one")
        if col:
            columns[i] = col
    missing = [c for c in ("orgNo", "comName") if c not in columns.values()]
    if missing or not {"conn_id", "url_env"} & set(columns.values()):
        need = missing + ([] if {"conn_id", "url_env"} & set(columns.values()) else ["conn_id or url_env"])
        raise ConfigError(f"{path} line {header_line}: no column {', '.join(need)}: the header "
                          f"row must name orgNo (统一社会信用代码), comName (单位名称) and conn_id "
                          f"(连接) or url_env (环境变量)")
    rows: list[Row] = []
    for line, cells in lines:
        if len(rows) >= MAX_ROWS:
            raise ConfigError(f"{path}: more than {MAX_ROWS:,} units: split the register")
        values = {col: _text(cells[i]) if i < len(cells) else "" for i, col in columns.items()}
        if not any(_text(c) for c in cells):
            continue  # an empty line
        numeric = "orgNo" in values and any(isinstance(cells[i], (int, float)) for i, c in
                                           columns.items() if c == "orgNo" and i < len(cells))
        rows.append(Row(line, values, numeric))
    return rows, ignored


def _bounded(path: Path, lines):
    """`lines` (line number, cells), stopped with one line at the first bound passed: lines read
    (blank ones too: a sheet may number its one row 1,048,576 or more), cells in a row and cells
    in all, counted as they come, before the next is read."""
    cells_read = 0
    for n, (line, cells) in enumerate(lines, start=1):
        if n > MAX_LINES or line > MAX_LINES:
            raise ConfigError(f"{path}: more than {MAX_LINES:,} lines: is this a register of units? "
                              f"split it")
        if len(cells) > MAX_COLUMNS:
            raise ConfigError(f"{path} line {line}: more than {MAX_COLUMNS:,} columns: keep the "
                              f"register's columns (orgNo, comName, conn_id or url_env) and a few notes")
        if any(isinstance(c, str) and len(c) > MAX_CELL_CHARS for c in cells):
            raise ConfigError(f"{path} line {line}: a cell of more than {MAX_CELL_CHARS:,} characters "
                              f"(Excel's own limit): is this a register of units? check that row")
        cells_read += len(cells)
        if cells_read > MAX_CELLS:
            raise ConfigError(f"{path} line {line}: more than {MAX_CELLS:,} cells in all: is this a "
                              f"register of units? split it")
        yield line, cells


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _csv_lines(path: Path):
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - GB18030 decodes nearly any bytes
        raise ConfigError(f"{path}: neither UTF-8 nor GB18030: save it as CSV UTF-8")
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as e:
        if "field larger than field limit" in str(e):  # one field past csv.field_size_limit()
            raise ConfigError(f"{path} line {start}: a field of more than {csv.field_size_limit():,} "
                              f"characters (a quote never closed?): is this a register of units? "
                              f"check that row") from None
        raise ConfigError(f"{path} line {reader.line_num}: not a CSV row ({e}): check its quotes") from None


def _not_xlsx(path: Path, e: BaseException) -> ConfigError:
    return ConfigError(f"{path}: not an .xlsx workbook ({type(e).__name__}): save it from Excel as "
                       f".xlsx or .csv")


def check_xlsx_sizes(path: Path) -> None:
    """Refuse an .xlsx whose zip declares more than a register expands to, before anything is
    inflated: the sizes are the zip directory's, and zipfile stops reading a part at its
    declared size (a part that holds more fails its CRC check), so they bound what openpyxl
    reads. Worksheets are read row by row (`_bounded` counts them); parts read whole have
    bounds of their own (`_part_limits`)."""
    import zipfile

    if path.stat().st_size > MAX_XLSX_BYTES:
        raise ConfigError(f"{path}: more than {MAX_XLSX_BYTES:,} bytes: is this a register of units?")
    try:
        with zipfile.ZipFile(path) as z:
            parts = z.infolist()
            if len(parts) > MAX_XLSX_PARTS:
                raise ConfigError(f"{path}: a zip of {len(parts):,} parts, more than {MAX_XLSX_PARTS:,}: "
                                  f"not a register workbook; save it from Excel as .xlsx or .csv")
            limit = _part_limits(path, z)
    except ConfigError:
        raise
    except Exception as e:  # not a zip, no [Content_Types].xml, not XML, a part failing its CRC
        raise _not_xlsx(path, e) from None
    total = sum(p.file_size for p in parts)
    if total > MAX_XLSX_EXPANDED:
        biggest = max(parts, key=lambda p: p.file_size)
        raise ConfigError(f"{path}: expands to {total:,} bytes, more than {MAX_XLSX_EXPANDED:,} "
                          f"({biggest.filename[:80]!r} alone to {biggest.file_size:,}): not a register "
                          f"of units; split it, or save it as .csv")
    for p in parts:
        if (most := limit(p.filename)) is not None and p.file_size > most:
            raise ConfigError(f"{path}: its part {p.filename[:80]!r} expands to {p.file_size:,} bytes, "
                              f"more than the {most:,} read at once: not a register of units; save "
                              f"it as .csv")


#: Parts openpyxl reads by name, whatever [Content_Types].xml says they are.
_READ_BY_NAME = ("[Content_Types].xml", "_rels/.rels", "xl/styles.xml", "xl/theme/theme1.xml",
                 "docProps/core.xml", "docProps/app.xml", "docProps/custom.xml")
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml."


def _part_limits(path: Path, z):
    """name -> the most a part may expand to when openpyxl reads it whole, or None for a part it
    reads row by row (a worksheet in xl/worksheets/) or never (an image), as [Content_Types].xml
    types them, the way openpyxl finds them."""
    import xml.etree.ElementTree as ET

    info = z.getinfo("[Content_Types].xml")
    if info.file_size > MAX_XLSX_PART:
        raise ConfigError(f"{path}: its part '[Content_Types].xml' expands to {info.file_size:,} bytes, "
                          f"more than the {MAX_XLSX_PART:,} read at once: not a register of units")
    root = ET.fromstring(z.read(info))
    ns = "{http://schemas.openxmlformats.org/package/2006/content-types}"
    defaults = {d.get("Extension", "").lower(): d.get("ContentType", "") for d in root.iter(f"{ns}Default")}
    overrides = {o.get("PartName", "").lstrip("/"): o.get("ContentType", "") for o in root.iter(f"{ns}Override")}

    def limit(name: str) -> int | None:
        kind = overrides.get(name, defaults.get(name.rsplit(".", 1)[-1].lower(), ""))
        if name in _READ_BY_NAME:
            return MAX_XLSX_PART
        if kind == _CT + "worksheet+xml" and name.startswith("xl/worksheets/") and \
                "/" not in name[len("xl/worksheets/"):]:
            return None
        if kind.startswith("image/"):
            return None
        return MAX_XLSX_STRINGS if kind == _CT + "sharedStrings+xml" else MAX_XLSX_PART

    return limit


def check_sheet_text(path: Path, part: str) -> None:
    """Refuse a sheet holding more than MAX_CELL_CHARS characters of text in one cell (or in one
    run between tags outside a cell), before openpyxl parses it: the part is scanned in 64 KB
    chunks, so a 100 MB cell that deflates to 100 KB is refused without being held whole. A
    sheet is exempt from MAX_XLSX_PART (a 200,000-unit sheet is tens of MB); its cells are not."""
    import xml.parsers.expat
    import zipfile

    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    state = {"chars": 0, "in_cell": 0, "row": "?"}

    def start(tag: str, attrs: dict[str, str]) -> None:
        name = tag.rsplit(" ", 1)[-1]
        if name == "row":
            state["row"] = attrs.get("r", state["row"])[:20]
        if name == "c":
            state["in_cell"] += 1
        if name == "c" or not state["in_cell"]:
            state["chars"] = 0

    def end(tag: str) -> None:
        if tag.rsplit(" ", 1)[-1] == "c":
            state["in_cell"] = max(0, state["in_cell"] - 1)
        if not state["in_cell"]:
            state["chars"] = 0

    def text(data: str) -> None:
        state["chars"] += len(data)
        if state["chars"] > MAX_CELL_CHARS:
            raise ConfigError(f"{path} line {state['row']}: a cell of more than {MAX_CELL_CHARS:,} "
                              f"characters (Excel's own limit): is this a register of units? check "
                              f"that row")

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        with zipfile.ZipFile(path) as z, z.open(part) as f:
            while chunk := f.read(1 << 16):
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except ConfigError:
        raise
    except Exception as e:  # not XML, a part failing its CRC
        raise _not_xlsx(path, e) from None


def _xlsx_lines(path: Path):
    from openpyxl import load_workbook

    check_xlsx_sizes(path)
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises whatever a crafted part makes its parser raise
        raise _not_xlsx(path, e) from None
    try:
        sheet = book.worksheets[0]
        check_sheet_text(path, sheet._worksheet_path)  # the part openpyxl streams the rows from
        sheet.reset_dimensions()  # rows as wide as their cells, not as a declared A1:XFD1048576
        rows = sheet.iter_rows(values_only=True)
        n = 0
        while True:
            try:
                cells = next(rows)
            except StopIteration:
                return
            except Exception as e:
                raise ConfigError(f"{path} line {n + 1}: the sheet cannot be read ({type(e).__name__}): "
                                  f"save it from Excel as .xlsx or .csv") from None
            n += 1
            yield n, list(cells)
    finally:
        book.close()


# --- checking rows ------------------------------------------------------------------------------


def org_no_problem(value: str) -> str | None:
    """Why `value` is not a unified social credit code (GB 32100), or None: as `etl.standard.checks`
    validates orgNo, with the part that is wrong."""
    from stdnum.cn import uscc

    from etl.standard.checks import USCC, is_valid_uscc

    code = value.strip().upper()
    if not code:
        return "orgNo is empty: give the unit's unified social credit code (统一社会信用代码)"
    if len(code) != 18:
        return f"orgNo {code[:40]} has {len(code)} characters, not 18"
    if not USCC.match(code):
        return (f"orgNo {code} holds a character a credit code cannot (I, O, S, V, Z or "
                f"punctuation), or its characters 3-8 are not digits")
    if not is_valid_uscc(code):
        return (f"orgNo {code} check character wrong: {code[-1]} where GB 32100 gives "
                f"{uscc.calc_check_digit(code)}: copy the code again from the unit's licence")
    return None


def row_problem(row: Row) -> str | None:
    v = row.values
    if problem := org_no_problem(v.get("orgNo", "")):
        return problem + (" (Excel held it as a number: format the column as text)"
                          if row.numeric_org else "")
    name = v.get("comName", "")
    if not name:
        return "comName is empty: give the unit's name (单位名称)"
    if len(name) > COM_NAME_LENGTH or not name.isprintable():
        return f"comName is longer than {COM_NAME_LENGTH} characters or holds control characters"
    conn, env = v.get("conn_id", ""), v.get("url_env", "")
    if bool(conn) == bool(env):
        return "give exactly one of conn_id (an Airflow connection) or url_env (an environment variable)"
    if conn and not CONN_ID.match(conn):
        return f"conn_id {conn[:60]!r} is not an Airflow connection id (letters, digits, _ . -)"
    if env and not ENV_NAME.match(env):
        return f"url_env {env[:60]!r} is not an environment variable name (letters, digits, _)"
    return None


def _q(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def unit_body(extends: str, row: Row, settings: dict[str, Any] | None = None) -> str:
    """A unit file below its first line: its template, its unit, its source and the per-unit
    settings (`{"source.schema": "hz"}`), nothing else. Values are written as JSON, which YAML
    reads as they are (a name with `:` or `#` stays one value)."""
    v = row.values
    blocks: dict[str, list[str]] = {"source": [f"  conn_id: {_q(v['conn_id'])}" if v.get("conn_id")
                                               else f"  url_env: {_q(v['url_env'])}"]}
    for key, value in (settings or {}).items():
        top, name = key.split(".", 1)
        blocks.setdefault(top, []).append(f"  {name}: {_q(value)}")
    return (f"extends: {_q(extends)}\n"
            f"unit:\n  orgNo: {_q(v['orgNo'].strip().upper())}\n  comName: {_q(v['comName'])}\n"
            + "".join(f"{top}:\n" + "\n".join(lines) + "\n" for top, lines in blocks.items()))


def unit_text(extends: str, row: Row, settings: dict[str, Any] | None = None,
              register: str = "a register") -> str:
    """A unit file as onboard writes it: a first line naming the register and the row, with
    the sha256 of the rest, by which a later run knows the file is still as it wrote it."""
    body = unit_body(extends, row, settings)
    where = "".join(ch if ch.isprintable() else "?" for ch in register)[:120]
    return (f"# Written by etl onboard from {where} line {row.line}; edited, it is left alone "
            f"(sha256:{hashlib.sha256(body.encode('utf-8')).hexdigest()})\n" + body)


def _legacy_text(extends: str, row: Row) -> str:
    """What an onboard before per-unit settings wrote for `row`."""
    return LEGACY_MARK + unit_body(extends, row)


def _as_written(data: bytes) -> bytes | None:
    """The body of a file still exactly as onboard wrote it (its first line's sha256 matches
    the rest), else None."""
    first, _, body = data.partition(b"\n")
    m = MARK.match(first)
    return body if m and hashlib.sha256(body).hexdigest() == m.group(1).decode() else None


def setting_headers(settings: list) -> dict[str, tuple[str, ...]]:
    """Setting name -> the headers a register may give its column: the name, the key it fills
    and the key's Chinese spellings."""
    return {s.name: (s.name, s.key, *PATH_HEADERS.get(s.key, ())) for s in settings}


def setting_values(row: Row, settings: list, base_source: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The row's per-unit values by mapping key, typed as the mapping reads them, or the
    problem of the first that is missing or wrong."""
    from pydantic import ValidationError

    from etl.mapping import SourceSpec
    from etl.mapping.model import FilesSpec

    out: dict[str, Any] = {}
    for s in settings:
        value = row.values.get(s.name, "")
        if not value:
            if s.required:
                return {}, (f"{s.name} is empty: the template needs it for each unit ({s.key}"
                            f"{': ' + s.description[:80] if s.description else ''})")
            continue
        out[s.key] = value
    source = {k.split(".", 1)[1]: v for k, v in out.items() if k.startswith("source.")}
    conn = {k: row.values[k] for k in ("conn_id", "url_env") if row.values.get(k)}
    files = {k.split(".", 1)[1]: v for k, v in out.items() if k.startswith("files.")}
    try:
        spec = SourceSpec.model_validate(base_source | source | conn)
        if files:
            FilesSpec.model_validate(files)
    except ValidationError as e:
        return {}, "; ".join(f"{_setting_of(err['loc'], settings, bool(files))}"
                             f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())[:300]
    dumped = spec.model_dump(mode="json")
    return {k: dumped[k.split(".", 1)[1]] if k.startswith("source.") else v for k, v in out.items()}, None


def _setting_of(loc: tuple, settings: list, files: bool) -> str:
    key = f"source.{loc[0]}" if loc else ("files" if files else "source")
    name = next((s.name for s in settings if s.key == key), None)
    return f"{name} ({key}): " if name else ("" if not loc else f"{'.'.join(map(str, loc))}: ")


def _onboarded(mappings_dir: Path) -> dict[str, Path]:
    """orgNo -> unit file, for the unit files already in the folder (read within bounds)."""
    from etl.mapping import discover
    from etl.mapping.templates import raw_unit

    out: dict[str, Path] = {}
    for p in discover(mappings_dir):
        org = raw_unit(p)[0].strip().upper()
        if org:
            out.setdefault(org, p)
    return out


def _check_template(mappings_dir: Path, extends: str) -> None:
    """The template must be inside the mappings folder, be a template, and give a valid
    mapping once a unit and a source are added: else nothing is written."""
    from etl.mapping import templates as tpl

    try:
        path = tpl.template_path(mappings_dir, extends, mappings_dir)
    except MappingError as e:
        raise ConfigError("--extends" + e.problems[0].split("[extends]", 1)[-1]) from None
    if not path.is_file():
        raise ConfigError(f"--extends {extends}: no such template in {mappings_dir}: templates "
                          f"live in {mappings_dir}/systems/")
    if tpl.template_root(path, mappings_dir) is None:
        raise ConfigError(f"--extends {extends}: {path} names a unit (it has unit:): extend a "
                          f"template, a file without unit:")
    if problems := tpl.standalone_problems(path, mappings_dir):
        raise MappingError([f"--extends {extends}: the template does not make a valid mapping:",
                            *problems])


# --- writing ------------------------------------------------------------------------------------


def _write(path: Path, text: str, overwrite: bool) -> bool:
    """Write `text` to `path` atomically, 0600; False when `path` appeared meanwhile and
    `overwrite` is off."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with private.create(tmp) as f:
        f.write(text.encode("utf-8"))
    try:
        if overwrite:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # never over a file that appeared meanwhile
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        if tmp.exists():
            tmp.unlink()


def onboard(register: Path, extends: str, *, mappings_dir: Path = Path("mappings"),
            overwrite: bool = False) -> Outcome:
    """Write a unit file per good row of `register`; the refused rows' lines in `refused`,
    files kept as they are (edited by hand, or not onboard's) in `left_alone`."""
    from etl.mapping import UnitSpec, parse_yaml, read_mapping_file
    from etl.mapping.loading import parse_mapping
    from etl.mapping.templates import CONNECTION, own_source_datasets, resolve, settings_of

    extends = extends.strip().replace(os.sep, "/")
    _check_template(mappings_dir, extends)
    path = mappings_dir / extends
    data = read_mapping_file(path)
    resolved = resolve(path, data, parse_yaml(path, data), mappings_dir)
    template = resolved.raw
    if own := own_source_datasets(template):  # a second database each unit must name
        raise ConfigError(f"--extends {extends}: dataset(s) {', '.join(own)} of the template live "
                          f"in a database of their own (datasets.{own[0]}.source), and a register "
                          f"gives one connection per unit: write these units' files by hand, "
                          f"each naming datasets: {{\"{own[0]}\": {{source: {{conn_id: ...}}}}}}")
    settings = settings_of(resolved)
    rows, ignored = read_register_with(register, setting_headers(settings))
    base_source = {k: v for k, v in (template.get("source") or {}).items()
                   if k not in CONNECTION}
    existing = _onboarded(mappings_dir)
    seen: dict[str, int] = {}
    out = Outcome([], [], [])
    declared = ", ".join(s.name for s in settings) or "none"
    out.warnings += [f"{register}: column {name!r} is neither a register column (orgNo, comName, "
                     f"conn_id, url_env) nor a per-unit setting of {extends} ({declared}): ignored"
                     for name in ignored]
    private.makedirs(mappings_dir)
    for row in rows:
        problem = row_problem(row)
        org = row.values.get("orgNo", "").strip().upper()
        target = mappings_dir / f"{org}.yaml"
        if problem is None and org in seen:
            problem = f"orgNo {org} is also on line {seen[org]}: keep one row per unit"
        if problem is None and org in existing and existing[org].name != target.name:
            problem = (f"orgNo {org} is already onboarded in {existing[org]}: remove the row, or "
                       f"that file first")
        values: dict[str, Any] = {}
        if problem is None:
            try:  # what the template leaves to the unit: its unit, its source, its settings
                UnitSpec.model_validate({"orgNo": org, "comName": row.values["comName"]})
            except Exception as e:  # a pydantic ValidationError
                problem = str(e).splitlines()[-1][:300]
        if problem is None:
            values, problem = setting_values(row, settings, base_source)
        seen.setdefault(org, row.line)
        text = "" if problem else unit_text(extends, row, values, register.name)
        if problem is None:  # the whole mapping, as `etl check` will read it
            try:
                parse_mapping(target, text.encode("utf-8"))
            except MappingError as e:
                first = e.problems[0] if e.problems else ""
                problem = f"the unit file would not be valid: {first[first.find('['):][:300]}"
        if problem is not None:
            out.refused.append(f"{register} line {row.line}: {problem}")
            continue
        replace = False
        if target.exists():
            try:
                current = target.read_bytes() if target.stat().st_size <= 1_000_000 else b""
            except OSError:
                current = b""
            body = text.split("\n", 1)[1].encode("utf-8")
            ours = _as_written(current)
            if ours == body:
                out.unchanged.append(target)
                continue
            if ours is None and current == _legacy_text(extends, row).encode("utf-8"):
                ours = current  # an earlier onboard's file for this very row
            if ours is None and not overwrite:
                why = ("edited by hand since etl onboard wrote it" if MARK.match(current.split(b"\n", 1)[0])
                       else "not written by etl onboard (or by one before it recorded what it wrote)")
                out.left_alone.append(f"{target}: left alone: {why}; register line {row.line} "
                                      f"differs: remove the file or pass --overwrite to replace it")
                continue
            replace = True
        if _write(target, text, replace):
            (out.updated if replace else out.written).append(target)
        else:
            out.refused.append(f"{register} line {row.line}: {target} appeared meanwhile: kept; "
                               f"pass --overwrite to replace it")
    return out
