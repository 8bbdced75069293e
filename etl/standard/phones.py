"""Telephone area codes of mainland cities, from libphonenumber's own geocoding data.

A unit writes a landline without its area code (`52345678`) when everybody it deals with is in
its city. To complete it we need the city's trunk area code (南京市 320100 -> 025). No table of
ours: libphonenumber describes each area code's region in Chinese (`江苏省南京市`, or several
cities sharing one code: `四川省成都市、资阳市、眉山市`), and `etl.standard.divisions` turns those names
into GB/T 2260 city codes.
"""

from __future__ import annotations

import re
from functools import cache

import phonenumbers

from etl.standard import divisions

# Mainland area codes: 010, 02X, then 03XX-09XX.
_AREAS = ("10", *(f"2{i}" for i in range(10)), *(str(n) for n in range(300, 1000)))
_PROVINCE = re.compile(r"^(.+?(?:省|自治区|市(?=.)))")


@cache
def area_codes() -> dict[str, str]:
    """{GB/T 2260 city code: trunk area code such as '025'}, for every city libphonenumber
    places under exactly one area code. Its geocoding data (~100 MB) is imported only here."""
    from phonenumbers import geocoder

    by_city: dict[str, set[str]] = {}
    for area in _AREAS:
        for local in ("62345678", "6234567"):
            number = phonenumbers.parse(f"0{area}{local}", "CN")
            if phonenumbers.is_valid_number(number):
                for city in _cities(geocoder.description_for_number(number, "zh")):
                    by_city.setdefault(city, set()).add(f"0{area}")
                break
    return {city: areas.pop() for city, areas in by_city.items() if len(areas) == 1}


def _cities(description: str) -> set[str]:
    """City codes named by a description such as 四川省成都市、资阳市、眉山市."""
    parts = description.split("、")
    province = m.group(1) if (m := _PROVINCE.match(parts[0])) else ""
    out = set()
    for i, part in enumerate(parts):
        name = part if i == 0 or part.startswith(province) else province + part
        code = divisions.city_code(name)
        if code:
            out.add(code)
    return out


def area_code(city: str | None) -> str | None:
    """The trunk area code of a GB/T 2260 city code (or a county code within it), or None."""
    if not city or len(city) != 6 or not city.isdigit():
        return None
    return area_codes().get(city[:4] + "00")


def city_of_org(org_no: str) -> str | None:
    """The city of a unified social credit code's registration authority (GB 32100 positions
    3-8 are its GB/T 2260 division code)."""
    code = org_no[2:8]
    return code[:4] + "00" if len(code) == 6 and code.isdigit() else None
