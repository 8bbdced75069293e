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

# GB 32100: 1 registration authority + 1 organisation type (both may be letters such as 'Y'),
# 6-digit division code, 9-character organisation code, 1 check character. python-stdnum
# requires the first eight to be digits, which refuses valid codes starting with a letter;
# its checksum itself is right, so we keep that and check the format ourselves.
_USCC = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$")
_REGNO = re.compile(r"^[0-9A-Z]{20}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_valid_uscc(value: str) -> bool:
    return bool(_USCC.match(value)) and uscc.calc_check_digit(value) == value[-1]


def is_valid_idcard(value: str) -> bool:
    """Resident ID (GB 11643): 18 characters, birth date, check digit."""
    return len(value) == 18 and ric.is_valid(value)


def is_valid_regno(value: str) -> bool:
    """Equipment code: 20 characters, digits and upper-case letters."""
    return bool(_REGNO.match(value))


@lru_cache(maxsize=65536)
def is_valid_phone(value: str) -> bool:
    """A mainland mobile or landline number (libphonenumber's metadata)."""
    try:
        number = phonenumbers.parse(value, "CN")
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
