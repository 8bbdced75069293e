"""Masking of personal data and secrets before they reach logs, audit examples, reject reports,
printed output or the run record: the house's one personal-data policy.

Those outputs are read by people who need to see *what kind* of value was wrong, not whose it
was. What a field holds is said by its definition (`etl.standard.Field.personal`: an ID number,
a phone, a person's name, or another number that identifies a person, such as a certificate
number); `shown` is the one way a field's value is shown to a person, whichever surface shows
it (reject and run messages, audit examples, source keys, reconciliation details, `etl
decrypt`), and whether or not a data key encrypts the field at rest. ID numbers keep their
region and last digits, phones their prefix or area code, names their family name, other
identifying numbers a character or two at each end. Codes of organisations (USCC) are public and
stay readable. Passwords never show: `mask_url` is the one way a URL is printed or stored,
`mask_secrets_in_text` the one way a message that may quote a URL or connection string is.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Literal
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url

#: What a protected field holds of a person (`etl.standard.Field.personal`), which says how its
#: values are masked: a resident ID number, a phone, a person's name, or another number that
#: identifies a person (a certificate number).
Personal = Literal["idcard", "phone", "name", "identifier"]
PERSONAL: tuple[Personal, ...] = ("idcard", "phone", "name", "identifier")

# Two-character family names (复姓) keep both characters: 欧阳** rather than 欧***.
_COMPOUND_SURNAMES = frozenset({
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "令狐", "端木", "独孤", "南宫", "西门", "百里", "呼延", "澹台", "公冶", "宗政",
    "濮阳", "太叔", "申屠", "闻人", "钟离", "万俟", "司空", "赫连", "拓跋", "第五", "鲜于", "闾丘",
})
_MOBILE = re.compile(r"^(\+?86)?1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^(0\d{2,3})([-\s])(\d[\d\s-]*)$")
_ID_SHAPED = re.compile(r"^\d{17}[0-9Xx]$")
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


def mask_identifier(value: str) -> str:
    """T3*********01: a number that identifies a person (a certificate number) keeps one or two
    characters at each end, never more than a third of it, with its length and spaces; under 6
    characters it is all stars. One spelt as a resident ID number is masked as one."""
    if _ID_SHAPED.match(value):
        return mask_idcard(value)
    keep = min(2, len(value) // 6)
    head, middle, tail = value[:keep], value[keep:len(value) - keep], value[len(value) - keep:]
    return head + re.sub(r"\S", "*", middle) + (tail if keep else "")


_BY_KIND = {"idcard": mask_idcard, "phone": mask_phone, "name": mask_name,
            "identifier": mask_identifier}


def mask(value: str | None, kind: str) -> str | None:
    """Mask `value` as a `kind` (one of `PERSONAL`); other kinds come back unchanged."""
    if value is None:
        return None
    fn = _BY_KIND.get(kind)
    return fn(value) if fn else value


def mask_text(text: str) -> str:
    """Mask 18-character ID numbers and 11-digit mobiles found anywhere in free text.

    For messages and examples whose field is not known to be personal (a free text quoting an
    ID number, an error message quoting a value).
    """
    text = _ID_IN_TEXT.sub(lambda m: mask_idcard(m.group()), text)
    return _MOBILE_IN_TEXT.sub(lambda m: mask_phone(m.group()), text)


def personal_kind(field: object) -> str | None:
    """What a field (an `etl.standard.Field`) holds of a person, as its definition says
    (`Field.personal`: one of `PERSONAL`), or None: a field that is not protected. A kind
    given instead of a field is refused: the field's definition decides, not its caller."""
    if isinstance(field, str):
        raise TypeError(f"give the field (etl.standard.Field), not {field!r}")
    kind = getattr(field, "personal", None)
    return kind if kind in _BY_KIND else None


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
    """`text` masked (`mask_message`), cut to `limit` characters with its length said:
    …(N chars)."""
    if len(text) <= limit:
        return mask_message(text)
    tail = f"…({len(text)} chars)"
    return mask_message(text[:limit + _MARGIN])[:max(limit - len(tail), 0)] + tail


def cap(text: str, limit: int = MESSAGE_CHARS) -> str:
    """A message fit to store or print: secrets, ID numbers and mobiles masked, at most `limit`
    characters (a 10 MB value must not become a 10 MB message)."""
    return _cut(text, limit)


# Each name of a list of names (张三，李四) is masked apart; other values whole, without the white
# space around them (which cleaning's audit shows it removed).
_NAME_GAPS = re.compile(r"([\s、,，;；/／]+)")
_EDGES = re.compile(r"^(\s*)(.*?)(\s*)$", re.S)
#: A personal value longer than this shows as stars only: every personal field is far shorter,
#: so it is invalid anyway, and a rule keeping its end would show its middle once cut.
_WHOLE = 1000


def _mask_field(text: str, kind: str) -> str:
    if kind == "name":
        return "".join(mask_name(p) if i % 2 == 0 and p else p
                       for i, p in enumerate(_NAME_GAPS.split(text)))
    before, value, after = _EDGES.match(text).groups()  # type: ignore[union-attr]
    return before + (mask(value, kind) or "") + after


def shown(value: object, field: object = None, limit: int | None = None) -> str:
    """How a value of `field` (an `etl.standard.Field`; None: a value of no known field) is
    shown to a person, on every surface: reject and run messages, audit examples, source keys,
    reconciliation details, `etl decrypt`. Masked as what the field holds (`personal_kind`),
    whether or not a data key encrypts it at rest; then any ID number or mobile in it, whatever
    the field; at most `limit` characters."""
    text = str(value)
    head = text if limit is None else text[:limit + _MARGIN]
    kind = personal_kind(field)
    if kind:
        head = _mask_field(text, kind)[:len(head)] if len(text) <= _WHOLE else _stars(head)
    head = mask_text(head)
    return head if limit is None else head[:limit]


def excerpt(value: object, field: object = None, limit: int = EXCERPT_CHARS) -> str:
    """How a message quotes a value of `field`: as `shown`, at most `limit` characters, in
    quotes, with the length when cut: `'abc…'…(12345 chars)`."""
    n = len(str(value))
    return repr(shown(value, field, limit)) + (f"…({n} chars)" if n > limit else "")


# --- secrets: passwords in URLs, connection strings and the messages that quote them --------

#: Query / connection-string parameters whose value is a secret, matched case-insensitively
#: with `-` read as `_`. Besides these names, any name containing one of `SECRET_WORDS` is a
#: secret too (`sslpassword`, `db_password`, `aws_secret_access_key`, `auth_token`).
#: `sslkey`, `sslcert` and `sslrootcert` are file paths, not secrets, and stay readable.
SECRET_PARAMS = frozenset({"pass", "key", "apikey", "api_key", "access_key", "private_key",
                           "sas", "sig", "signature"})
SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "credential")
MASK = "***"
MIN_SECRET_LENGTH = 4  # a shorter registered secret would mask ordinary words; the patterns still apply

# Bounded repetitions: a long message without the expected `@` or `=` costs linear time.
_USERINFO = re.compile(r"(\b[A-Za-z][\w+.-]{0,40}://[^\s:/@'\"]{0,256}:)[^\s'\"]{1,512}@")
_KEY_VALUE = re.compile(
    r"""\b(?P<key>[A-Za-z_][\w.-]{0,63})(?P<sep>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;,'")]+)"""
    r"""|(?P<q>['"])(?P<qkey>[A-Za-z_][\w.-]{0,63})(?P=q)(?P<qsep>\s*:\s*)(?P<qvalue>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_known: set[str] = set()
_known_lock = threading.Lock()
# `mask_message` of short texts, by text, for as long as the registered secrets are the same
# (`register_secrets` empties it and counts a new generation): the report masks the same labels,
# rule names and examples thousands of times. Only a result computed under the current
# generation is kept, so no text masked before a secret was registered is served after.
_MEMO_CHARS = 200
_MEMO_ENTRIES = 8192
_memo: dict[str, str] = {}
_generation = 0


def is_secret_param(name: str) -> bool:
    """Whether a URL query or connection-string parameter named `name` carries a secret."""
    n = name.strip().lower().replace("-", "_")
    return n in SECRET_PARAMS or any(w in n for w in SECRET_WORDS)


def _parse(url: str | URL) -> URL | None:
    if isinstance(url, URL):
        return url
    try:
        return make_url(url)
    except Exception:  # not a URL: the text patterns still apply
        return None


def url_secrets(url: str | URL) -> list[str]:
    """The secrets a URL carries: its password and every secret query parameter's value."""
    parsed = _parse(url)
    if parsed is None:
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if is_secret_param(key):
            found += [v for v in ((value,) if isinstance(value, str) else value) if v]
    return found


def holds_secret(url: str | URL) -> bool:
    """Whether a URL (or a string that fails to parse as one) carries a password or secret."""
    if _parse(url) is not None:
        return bool(url_secrets(url))
    return mask_secrets_in_text(str(url)) != str(url)


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Remember secrets so every later masked text hides them, in whatever shape a driver
    echoes them; inside Airflow also give them to its masker, so task logs show *** instead."""
    new = []
    for secret in secrets:
        if not secret:
            continue
        forms = {str(secret), quote(str(secret), safe=""), quote_plus(str(secret), safe="")}
        new += [f for f in forms if len(f) >= MIN_SECRET_LENGTH]
    if not new:
        return
    global _generation
    with _known_lock:
        if not _known.issuperset(new):
            _known.update(new)
            _memo.clear()
            _generation += 1
    if "airflow" in sys.modules:  # importing Airflow just to mask would cost the CLI a second
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # pragma: no cover - airflow is a dependency
            return
        for form in new:
            mask_secret(form)


def register_url_secrets(url: str | URL) -> None:
    """`register_secrets` for a URL's password and secret query parameters; never raises."""
    try:
        register_secrets(url_secrets(url))
    except Exception:  # pragma: no cover - registering must never break a connection
        pass


def _masked_pair(m: re.Match) -> str:
    if m.group("key") is not None:
        if not is_secret_param(m.group("key")):
            return m.group()
        return f"{m.group('key')}{m.group('sep')}{MASK}"
    if not is_secret_param(m.group("qkey")):
        return m.group()
    return f"{m.group('q')}{m.group('qkey')}{m.group('q')}{m.group('qsep')}'{MASK}'"


def mask_secrets_in_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every password hidden: the given and registered secrets (also
    percent-encoded), a URL's `user:password@`, and `password=...` / `token=...` pairs (query
    strings, libpq conninfo, `'password': '...'`). For driver messages that may quote a URL
    or a DSN. Never raises."""
    try:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update({str(secret), quote(str(secret), safe=""), quote_plus(str(secret), safe="")})
        with _known_lock:
            forms.update(_known)
        for form in sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=len, reverse=True):
            text = text.replace(form, MASK)
        text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
        return _KEY_VALUE.sub(_masked_pair, text)
    except Exception:  # pragma: no cover - a message that cannot be masked is not shown
        return "(message hidden: it could not be checked for passwords)"


def mask_url(url: str | URL) -> str:
    """A URL as it may be printed, logged or stored: `user:***@`, secret query parameters as
    `***`. Strings that are not valid URLs are masked by pattern. Never raises."""
    try:
        parsed = _parse(url)
        if parsed is None:
            return mask_secrets_in_text(str(url))
        query = {k: (MASK if is_secret_param(k) else v) for k, v in parsed.query.items()}
        text = parsed.set(query=query).render_as_string(hide_password=True)
        text = text.replace(quote_plus(MASK), MASK)
        return mask_secrets_in_text(text, url_secrets(parsed))
    except Exception:  # pragma: no cover
        return mask_secrets_in_text(str(url))


# Where a database quotes the row it refused (PostgreSQL's `DETAIL:  Failing row contains (...)`
# and a COPY's `CONTEXT:  COPY t, line 3, column c: "..."`), the row's values: any of them
# may be protected, and nothing in the text says which.
_QUOTED_ROW = re.compile(r"(Failing row contains |\bCOPY [^,\n]{1,200}, line \d+(?:, column [^:\n]{1,200})?: )[^\n]*")
ROW_HIDDEN = "(the row's values are not shown)"


def mask_message(text: str) -> str:
    """An error or log message as it may be shown or stored: secrets and personal data masked,
    and a row a database quotes in its error hidden whole."""
    if len(text) > _MEMO_CHARS:
        return _mask_message(text)
    masked = _memo.get(text)
    if masked is not None:
        return masked
    generation = _generation
    masked = _mask_message(text)
    with _known_lock:
        if generation == _generation:  # no secret was registered meanwhile
            if len(_memo) >= _MEMO_ENTRIES:
                _memo.clear()
            _memo[text] = masked
    return masked


def _mask_message(text: str) -> str:
    return mask_text(_QUOTED_ROW.sub(lambda m: m.group(1) + ROW_HIDDEN, mask_secrets_in_text(text)))


class MaskingFilter(logging.Filter):
    """Whatever is logged through a handler or logger it filters, by us or a library, shows no
    password nor an ID number, a mobile or a row a database quotes (`mask_message`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = mask_message(record.getMessage()), ()
            if record.exc_info and not record.exc_text:
                record.exc_text = mask_message(logging.Formatter().formatException(record.exc_info))
        except Exception:  # pragma: no cover - logging must not fail
            pass
        return True


def mask_logs(logger: logging.Logger | logging.Handler) -> None:
    """Install `MaskingFilter` on `logger` (a logger or a handler), once."""
    if not any(isinstance(f, MaskingFilter) for f in logger.filters):
        logger.addFilter(MaskingFilter())
