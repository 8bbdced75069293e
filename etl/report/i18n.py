"""The report site's language: Chinese by default (its readers are the collecting organisation
and the units), English as the second. Messages are marked in the code with `_()` (or `N_()` for
a table built at import time and translated when shown), extracted with pybabel into
`locale/messages.pot` and translated in `locale/<lang>/LC_MESSAGES/messages.po` (README, "The
report site"). The .po is compiled in memory on first use (Babel), so no .mo can lag behind it.

The language is `etl report --lang`, else `ETL_REPORT_LANGUAGE`, else zh_CN; `using()` sets it
for one build (a context variable: two builds in one process do not mix).
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

from etl.common import settings
from etl.common.errors import ConfigError

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "messages"
DEFAULT = "zh_CN"
#: catalogue name -> the page's `<html lang>`
LANGUAGES = {"zh_CN": "zh-CN", "en": "en"}
_ALIASES = {"zh": "zh_CN", "zh-cn": "zh_CN", "zh_cn": "zh_CN", "zh-hans": "zh_CN", "cn": "zh_CN",
            "en": "en", "en-us": "en", "en_us": "en", "en-gb": "en", "en_gb": "en"}

_active: ContextVar[str | None] = ContextVar("etl_report_language", default=None)


def language(explicit: str | None = None) -> str:
    """The catalogue to use: `explicit`, else `ETL_REPORT_LANGUAGE`, else zh_CN."""
    given = (explicit or settings.text("ETL_REPORT_LANGUAGE") or DEFAULT).strip()
    lang = _ALIASES.get(given.lower())
    if lang is None:
        source = "--lang" if explicit else "ETL_REPORT_LANGUAGE"
        raise ConfigError(f"{source}={given!r}: the report speaks {', '.join(LANGUAGES)}")
    return lang


@lru_cache(maxsize=None)
def translation(lang: str) -> gettext.NullTranslations:
    """The catalogue of `lang`, compiled from its .po (fuzzy entries left out, as msgfmt does)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with open(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    mo = io.BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return gettext.GNUTranslations(mo)


def current() -> str:
    return _active.get() or language()


@contextmanager
def using(lang: str | None) -> Iterator[str]:
    """Render in `lang` (None: the setting) inside the block."""
    token = _active.set(language(lang))
    try:
        yield _active.get() or DEFAULT
    finally:
        _active.reset(token)


def _(message: str) -> str:
    """`message` in the current language."""
    return translation(current()).gettext(message)


def N_(message: str) -> str:
    """Marks `message` for the catalogue without translating it (translated when shown)."""
    return message


def html_lang() -> str:
    return LANGUAGES[current()]
