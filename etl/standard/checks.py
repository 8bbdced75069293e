"""Check-digit and format predicates for the standard's codes, built on python-stdnum.

Each takes one already-cleaned string. Validation maps them over a column's distinct values,
which are few compared with its rows.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

import phonenumbers
from stdnum.cn import ric, uscc

from etl.common import clock
from etl.standard import divisions

# GB 32100: 1 registration authority + 1 organisation type (both may be letters such as 'Y'),
# 6-digit division code, 9-character organisation code, 1 check character. python-stdnum
# requires the first eight to be digits, which refuses valid codes starting with a letter;
# its checksum itself is right, so we keep that and check the format ourselves.
USCC = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$")
_REGNO = re.compile(r"^[0-9A-Z]{20}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_valid_uscc(value: str) -> bool:
    return bool(USCC.match(value)) and uscc.calc_check_digit(value) == value[-1]


_IDCARD = re.compile(r"^\d{17}[0-9X]$")


def idcard_problems(value: str, today: date | None = None) -> list[str]:
    """What makes `value` not a resident ID number (GB 11643), one phrase per failing part;
    empty when it is one. A number is assigned at registration, often years after birth, and
    never changes when its holder moves: its area code need only be, or have been, a GB/T 2260
    code in some era, not one in force in the birth year (python-stdnum's `ric` ties the two).
    The phrases never quote the birth date: a masked ID number hides it, and with the region
    and last four a message shows it would be the whole number (`etl.common.masking`)."""
    if not _IDCARD.match(value):
        return ["is not 17 digits and a check character (0-9 or X)"]
    out = []
    if ric.calc_check_digit(value) != value[17]:
        out.append("wrong check character")
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        out.append("no such birth date (characters 7-14, YYYYMMDD)")
    else:
        if born > (today or clock.today()):
            out.append("birth date (characters 7-14) is in the future")
    if not divisions.is_code_of_any_era(value[:6]):
        out.append(f"unknown area code {value[:6]} (never a GB/T 2260 code)")
    return out


def is_valid_idcard(value: str) -> bool:
    """Resident ID (GB 11643): 17 digits and a check character, a real birth date not in the
    future, and an area code of any era."""
    return not idcard_problems(value)


def is_valid_regno(value: str) -> bool:
    """Equipment code: 20 characters, digits and upper-case letters."""
    return bool(_REGNO.match(value))


_EXTENSION = re.compile(r"^(?P<main>.+?)转(?P<ext>\d{1,6})$")


@lru_cache(maxsize=65536)
def is_valid_phone(value: str) -> bool:
    """A number libphonenumber calls valid for CN (mobile, landline, toll-free, ...), with or
    without an extension (cleaning spells it 025-52345678转8001)."""
    m = _EXTENSION.match(value)
    try:
        number = phonenumbers.parse(m.group("main") if m else value, "CN")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def is_valid_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True
