"""Masking of personal data before it reaches logs, audit examples or reject reports.

Those outputs are read by people who need to see *what kind* of value was wrong, not whose it
was: ID numbers keep their region and last digits, phones their prefix or area code, names
their family name. Codes of organisations (USCC) are public and stay readable.
"""

from __future__ import annotations

import re

# Two-character family names (复姓) keep both characters: 欧阳** rather than 欧***.
_COMPOUND_SURNAMES = frozenset({
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "令狐", "端木", "独孤", "南宫", "西门", "百里", "呼延", "澹台", "公冶", "宗政",
    "濮阳", "太叔", "申屠", "闻人", "钟离", "万俟", "司空", "赫连", "拓跋", "第五", "鲜于", "闾丘",
})
_MOBILE = re.compile(r"^(\+?86)?1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^(0\d{2,3})([-\s])(\d[\d\s-]*)$")
_ID_IN_TEXT = re.compile(r"(?<![0-9])\d{17}[0-9Xx](?![0-9])")
_MOBILE_IN_TEXT = re.compile(r"(?<![0-9])1[3-9]\d{9}(?![0-9])")


def _stars(text: str) -> str:
    return "*" * len(text)


def mask_idcard(value: str) -> str:
    """320102********1234: the region (first 6) and the last 4 stay, birth date goes."""
    if len(value) < 11:
        return _stars(value)
    return value[:6] + _stars(value[6:-4]) + value[-4:]


def mask_phone(value: str) -> str:
    """138****5678 for mobiles, 025-******34 for landlines (area code and last 2)."""
    compact = value.replace(" ", "").replace("-", "")
    if _MOBILE.match(compact):
        return compact[:-8] + "****" + compact[-4:]
    m = _LANDLINE.match(value)
    if m and m.group(2):
        area, sep, number = m.groups()
    elif compact.isdigit() and compact.startswith("0") and len(compact) > 6:
        cut = 3 if compact[1] in "12" else 4  # 010, 02x are 3 digits; others 4 (0512)
        area, sep, number = compact[:cut], "", compact[cut:]
    else:
        area, sep, number = "", "", value
    if len(number) <= 2:
        return area + sep + _stars(number)
    return area + sep + re.sub(r"\d", "*", number[:-2]) + number[-2:]


def mask_name(value: str) -> str:
    """张* / 欧阳**: the family name stays; a one-character value is fully masked."""
    keep = 2 if value[:2] in _COMPOUND_SURNAMES and len(value) > 2 else 1
    if len(value) <= keep:
        return _stars(value)
    return value[:keep] + _stars(value[keep:])


_BY_KIND = {"idcard": mask_idcard, "phone": mask_phone, "name": mask_name}


def mask(value: str | None, kind: str) -> str | None:
    """Mask `value` as a `kind` (a Field.kind, or 'name'); other kinds come back unchanged."""
    if value is None:
        return None
    fn = _BY_KIND.get(kind)
    return fn(value) if fn else value


def mask_text(text: str) -> str:
    """Mask 18-character ID numbers and 11-digit mobiles found anywhere in free text.

    For messages and examples whose field is not known to be personal (a certificate number
    that is an ID number, an error message quoting a value).
    """
    text = _ID_IN_TEXT.sub(lambda m: mask_idcard(m.group()), text)
    return _MOBILE_IN_TEXT.sub(lambda m: mask_phone(m.group()), text)


# --- bounded text ----------------------------------------------------------------------------

#: The longest message stored or printed for one finding (reject, warning, audit example).
MESSAGE_CHARS = 500
#: The longest run message (`ingest_run.message`, a failed dataset's line in a summary).
RUN_MESSAGE_CHARS = 2000
#: How much of a value a message quotes.
EXCERPT_CHARS = 40
# Masking never lengthens text, but a value cut mid-way could hide an ID number from
# `mask_text`: mask a little more than is kept, then cut.
_MARGIN = 24


def _cut(text: str, limit: int) -> str:
    """`text` masked, cut to `limit` characters with its length said: …(N chars)."""
    if len(text) <= limit:
        return mask_text(text)
    tail = f"…({len(text)} chars)"
    return mask_text(text[:limit + _MARGIN])[:max(limit - len(tail), 0)] + tail


def cap(text: str, limit: int = MESSAGE_CHARS) -> str:
    """A message fit to store or print: ID numbers and mobiles masked, at most `limit`
    characters (a 10 MB value must not become a 10 MB message)."""
    return _cut(text, limit)


def personal_kind(field: object) -> str | None:
    """The masking kind of a standard field (an `etl.standard.Field`): its `idcard` / `phone`
    kind, `name` for person names (姓名, and the fields whose Chinese name ends in 人: 联系人,
    责任人, 排查人 ...), else None."""
    kind, zh = getattr(field, "kind", None), getattr(field, "zh", "")
    if kind in ("idcard", "phone"):
        return kind
    if zh == "姓名" or zh.endswith("人"):
        return "name"
    return None


def excerpt(value: object, kind: str | None = None, limit: int = EXCERPT_CHARS) -> str:
    """How a message quotes a value: masked by `kind` (see `personal_kind`), then any ID
    number or mobile in it; at most `limit` characters, in quotes, with the length when cut:
    `'abc…'…(12345 chars)`."""
    text = str(value)
    n = len(text)
    head = text[:limit + _MARGIN]
    if kind:
        head = mask(head, kind) or ""
    head = mask_text(head)[:limit]
    return repr(head) + (f"…({n} chars)" if n > limit else "")
