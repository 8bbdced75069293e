"""GB/T 2260 administrative divisions: names to codes for `cityCode` / `aeraCode`.

The standard asks for division *codes* while its examples show *names* (江苏省××市, ××区), so
sources send either. This module turns a name into the current 6-digit code, and keeps a code.

Source: the division table python-stdnum ships (`stdnum/cn/loc.dat`, read through
`stdnum.numdb`). Each code there carries its names with validity years, e.g.
``320803 county="[2000-2010]楚州区,[2011-]淮安区"``. A code whose last period is open
(``[2011-]`` or no years at all) is *current*; one whose last period ends is *retired*.

Renamed and merged divisions. A source written years ago still says 白下区 or 海门市, so every
old name resolves to the code that holds that territory today:

* an old name of a code still in use resolves to that code (楚州区 -> 320803 淮安区,
  淮阴市 -> 320800 淮安市);
* a retired code resolves to its *successor*: first the explicit Jiangsu table
  `_JIANGSU_SUCCESSORS` (merges the data cannot reveal: 白下区 -> 秦淮区 320104, 下关区 -> 鼓楼区
  320106, 沧浪区/平江区/金阊区 -> 姑苏区 320508, 清河区/清浦区 -> 清江浦区 320812,
  崇安区/南长区/北塘区 -> 梁溪区 320213, 港闸区 -> 崇川区 320613, ...); otherwise the one
  current division of the same province with the same name (崇川区 320602 -> 320613), or with
  the same stem (the name without 县/市/区...) in the same city, then in the same province
  (铜山县 -> 铜山区 320312, 大丰市 -> 大丰区 320904, 海门市/海门县 -> 海门区 320614,
  吴江市 -> 吴江区 320509, 姜堰市 -> 姜堰区 321204, 江都市 -> 江都区 321012);
* a retired code that was *split* (九里区, 锡山市, 吴县市, the county-level 泰州市/宿迁市) has
  no successor: its name resolves to nothing and cleaning leaves it for validation to reject,
  because any single code would be a guess.

Jiangsu (32xxxx) is checked entry by entry (see `tests/test_divisions.py`); other provinces
get the same automatic rules without an explicit table, so their merges may stay unresolved.

Municipalities (北京市, 上海市, 天津市, 重庆市) have no prefecture-level name in the table;
their city code is taken as ``XX0100`` (市辖区), the usual 地市-level code for them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from functools import cache

from stdnum import numdb

JIANGSU = "32"

# Merges and splits the table cannot show. Value None: split among several successors.
_JIANGSU_SUCCESSORS: dict[str, str | None] = {
    "320103": "320104",  # 白下区 -> 秦淮区 (2013)
    "320107": "320106",  # 下关区 -> 鼓楼区 (2013)
    "320112": "320116",  # 大厂区 -> 六合区 (2002)
    "320122": "320111",  # 江浦县 -> 浦口区 (2002)
    "320202": "320213",  # 崇安区 -> 梁溪区 (2015)
    "320203": "320213",  # 南长区 -> 梁溪区 (2015)
    "320204": "320213",  # 北塘区 -> 梁溪区 (2015)
    "320212": "320211",  # 马山区 -> 滨湖区 (2000)
    "320222": None,      # 无锡县 -> 锡山市 -> split into 锡山区 and 惠山区 (2000)
    "320283": None,      # 锡山市: split into 锡山区 and 惠山区 (2000)
    "320304": None,      # 矿区/九里区: split among 鼓楼区, 泉山区 and 铜山区 (2010)
    "320325": "320382",  # 邳县 -> 邳州市 (1992)
    "320403": None,      # 广化区 (1986): divided between 天宁区 and 钟楼区
    "320405": "320412",  # 戚墅堰区 -> 武进区 (2015)
    "320502": "320508",  # 沧浪区 -> 姑苏区 (2012)
    "320503": "320508",  # 平江区 -> 姑苏区 (2012)
    "320504": "320508",  # 金阊区 -> 姑苏区 (2012)
    "320511": "320505",  # 苏州郊区 -> 虎丘区 (2000)
    "320521": "320582",  # 沙洲县 -> 张家港市 (1986)
    "320524": None,      # 吴县 -> 吴县市 -> split into 吴中区 and 相城区 (2000)
    "320586": None,      # 吴县市: split into 吴中区 and 相城区 (2000)
    "320611": "320613",  # 港闸区 -> 崇川区 (2020)
    "320624": "320612",  # 南通县 -> 通州市 (1993) -> 通州区 (2009)
    "320702": None,      # 新海区 (1986): divided between 新浦区 and 海州区
    "320704": None,      # 云台区 (2001): divided
    "320705": "320706",  # 新浦区 -> 海州区 (2014)
    "320802": "320812",  # 清河区 -> 清江浦区 (2016)
    "320811": "320812",  # 清浦区 -> 清江浦区 (2016)
    "320824": None,      # 宿迁县 -> county-level 宿迁市 -> split into 宿城区 and 宿豫县 (1996)
    "320881": None,      # county-level 宿迁市: split (1996)
    "320882": "320803",  # county-level 淮安市 -> 楚州区 (2000) -> 淮安区 (2011)
    "320911": None,      # 盐城郊区 (1996): divided
    "321011": "321003",  # 郊区/维扬区 -> 邗江区 (2011)
    "321020": None,      # county-level 泰州市 (1983-1986): later split into 海陵区 and 高港区
    "321028": "321204",  # 泰县 -> 姜堰市 (1994) -> 姜堰区 (2012)
    "321082": None,      # county-level 泰州市 (1989-1996): split into 海陵区 and 高港区
    # codes of the prefectures (地区) abolished in 1983
    "322125": "320382",  # 邳县 -> 邳州市
    "322200": "320800",  # 淮阴地区 -> 淮阴市 (1983) -> 淮安市 (2001)
    "322201": "320812",  # 清江市 -> 清河区 + 清浦区 (1983) -> 清江浦区 (2016)
    "322428": "321204",  # 泰县 -> 姜堰区
    "322524": "320612",  # 南通县 -> 通州区
    "322723": "320582",  # 沙洲县 -> 张家港市
}

# Table rows that are groupings, not places: never matched by name.
_NOT_PLACES = frozenset({
    "市辖区", "县", "市", "市区", "城区", "郊区", "矿区",
    "省直辖县级行政单位", "省直辖县级行政区划", "自治区直辖县级行政区划", "省直辖行政单位",
})
_PROVINCE_SUFFIX = re.compile(r"(省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特別行政區|特别行政区)$")
_CITY_SUFFIX = re.compile(r"(市|地区|自治州|盟)$")
_COUNTY_SUFFIX = re.compile(r"(自治县|自治旗|林区|特区|县|市|区|旗)$")
_PERIOD = re.compile(r"^\[(\d{4})?-(\d{4})?\](.*)$")
_SIX_DIGITS = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class Division:
    """One code of the table with its names over time (oldest first)."""

    code: str
    names: tuple[tuple[int | None, int | None, str], ...]

    @property
    def name(self) -> str:
        """The latest name (the current one when the code is in use)."""
        return self.names[-1][2]

    @property
    def current(self) -> bool:
        return self.names[-1][1] is None

    @property
    def level(self) -> str:
        """'province' (XX0000), 'city' (XXYY00) or 'county'."""
        if self.code.endswith("0000"):
            return "province"
        return "city" if self.code.endswith("00") else "county"


@dataclass(frozen=True)
class _Tables:
    divisions: dict[str, Division]
    successors: dict[str, str]          # retired code -> current code
    city_names: dict[str, frozenset[str]]
    county_names: dict[str, frozenset[str]]
    provinces: tuple[tuple[str, str], ...]  # (name or short name, 2-digit prefix), longest first


def _periods(text: str) -> tuple[tuple[int | None, int | None, str], ...]:
    out = []
    for part in text.split(","):
        m = _PERIOD.match(part)
        if m:
            start, end, name = m.groups()
            out.append((int(start) if start else None, int(end) if end else None, name))
        else:
            out.append((None, None, part))
    return tuple(out)


@cache
def _divisions() -> dict[str, Division]:
    """Every code of stdnum's table (both levels under each province)."""
    out: dict[str, Division] = {}
    for _, low, _high, props, children in numdb.get("cn/loc").prefixes:
        out[low + "0000"] = Division(low + "0000", _periods(props.get("province", "")))
        for _, sub, _h, sub_props, _c in children:
            if "county" in sub_props:
                out[low + sub] = Division(low + sub, _periods(sub_props["county"]))
    return out


def _stem(name: str, level: str) -> str:
    """The name without its administrative suffix (南京市 -> 南京, 铜山县 -> 铜山)."""
    return (_CITY_SUFFIX if level == "city" else _COUNTY_SUFFIX).sub("", name)


def _unique(codes: set[str] | None) -> str | None:
    return next(iter(codes)) if codes and len(codes) == 1 else None


@dataclass(frozen=True)
class _Current:
    """Current divisions indexed for successor search: by (province, level, any name) and by
    (code prefix, level, stem of the current name)."""

    by_name: dict[tuple[str, str, str], set[str]]
    by_stem: dict[tuple[str, str, str], set[str]]

    @classmethod
    def build(cls, divisions: dict[str, Division]) -> _Current:
        by_name: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        by_stem: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for d in divisions.values():
            if not d.current or d.level == "province":
                continue
            for *_, name in d.names:
                by_name[(d.code[:2], d.level, name)].add(d.code)
            stem = _stem(d.name, d.level)
            for scope in (2, 4):
                by_stem[(d.code[:scope], d.level, stem)].add(d.code)
        return cls(by_name, by_stem)


def _successor(d: Division, current: _Current) -> str | None:
    """The current code holding a retired code's territory, when the data makes it certain."""
    if d.code in _JIANGSU_SUCCESSORS:
        return _JIANGSU_SUCCESSORS[d.code]
    if d.name in _NOT_PLACES:
        return None
    found = _unique(current.by_name.get((d.code[:2], d.level, d.name)))
    stem = _stem(d.name, d.level)
    if found or len(stem) < 2:
        return found
    for scope in (4, 2) if d.level == "county" else (2,):
        found = _unique(current.by_stem.get((d.code[:scope], d.level, stem)))
        if found:
            return found
    return None


def _municipality_city(province: Division) -> str | None:
    """City-level code of a municipality (北京市 -> 110100)."""
    return province.code[:2] + "0100" if province.name.endswith("市") else None


@cache
def _tables() -> _Tables:
    """Built once per process: the table is static and small (~7,000 rows)."""
    divisions = _divisions()
    current = _Current.build(divisions)
    successors = {d.code: s for d in divisions.values() if not d.current and d.level != "province"
                  for s in [_successor(d, current)] if s and divisions[s].current}
    city_names: dict[str, set[str]] = defaultdict(set)
    county_names: dict[str, set[str]] = defaultdict(set)
    current_city_names = {d.name for d in divisions.values() if d.current and d.level == "city"}
    for d in divisions.values():
        target = d.code if d.current else successors.get(d.code)
        if target is None or d.level == "province":
            continue
        index = city_names if d.level == "city" else county_names
        for *_, name in d.names:
            if name in _NOT_PLACES or (d.level == "county" and not d.current
                                       and name in current_city_names):
                continue
            index[name].add(target)
    provinces = []
    for d in divisions.values():
        if d.level == "province" and d.current:
            provinces += [(d.name, d.code[:2]), (_PROVINCE_SUFFIX.sub("", d.name), d.code[:2])]
            city = _municipality_city(d)
            if city and city in divisions:
                city_names[d.name].add(city)
                city_names[_PROVINCE_SUFFIX.sub("", d.name)].add(city)
    _add_stems(city_names, divisions, "city")
    _add_stems(county_names, divisions, "county")
    return _Tables(
        divisions=divisions,
        successors=successors,
        city_names={k: frozenset(v) for k, v in city_names.items()},
        county_names={k: frozenset(v) for k, v in county_names.items()},
        provinces=tuple(sorted(set(provinces), key=lambda p: -len(p[0]))),
    )


def _add_stems(index: dict[str, set[str]], divisions: dict[str, Division], level: str) -> None:
    """Short names (南京, 玄武) for current names, only where no full name is spelled so."""
    stems: dict[str, set[str]] = defaultdict(set)
    for name, codes in index.items():
        stem = _stem(name, level)
        if len(stem) >= 2 and stem != name:
            stems[stem] |= {c for c in codes if divisions[c].name == name}
    for stem, codes in stems.items():
        if stem not in index and codes:
            index[stem] = set(codes)


def _normalise(text: str) -> str:
    """Half-width, no spaces: '江苏省 南京市' and '３２０１００' compare as written properly."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _strip_province(text: str) -> tuple[str | None, str]:
    """('32', '南京市') from '江苏省南京市'; (None, text) when no province prefix."""
    for name, prefix in _tables().provinces:
        if text.startswith(name):
            return prefix, text[len(name):]
    return None, text


def _pick(codes: frozenset[str] | None, prefix: str | None) -> str | None:
    """The one candidate within `prefix`; without a prefix, prefer a single Jiangsu one."""
    if not codes:
        return None
    if prefix is not None:
        codes = frozenset(c for c in codes if c.startswith(prefix))
    if len(codes) == 1:
        return next(iter(codes))
    if prefix is None:
        return _pick(codes, JIANGSU) if any(c.startswith(JIANGSU) for c in codes) else None
    return None


def _code(text: str, level: str) -> str | None:
    """A 6-digit code of `level`, made current (a retired code gives its successor)."""
    t = _tables()
    d = t.divisions.get(text)
    if d is None or d.level != level:
        return None
    return text if d.current else t.successors.get(text)


def city_code(name_or_code: str) -> str | None:
    """The current 6-digit code of a prefecture-level city.

    Accepts a code (320100, kept; a retired one gives its successor), a name with or without
    its province (江苏省南京市, 南京市, 南京), an old name (淮阴市 -> 320800) or a name followed
    by a district (南京市玄武区 -> 320100). A county-level name such as 江阴市 is not a city and
    gives None, as does anything unknown or ambiguous.
    """
    text = _normalise(name_or_code)
    if _SIX_DIGITS.match(text):
        return _code(text, "city")
    names = _tables().city_names
    found = _pick(names.get(text), None)
    if found or not text:
        return found
    province, rest = _strip_province(text)
    if province and rest:
        found = _pick(names.get(rest), province)
    return found or _city_prefix(rest, province)[0]


def _city_prefix(text: str, province: str | None) -> tuple[str | None, str | None]:
    """('320100', '320102') from '南京市玄武区': a city name followed by one of its districts."""
    names = _tables().city_names
    for end in range(len(text) - 1, 1, -1):
        city = _pick(names.get(text[:end]), province)
        if city:
            district = _pick(_tables().county_names.get(text[end:]), _scope(city))
            if district:
                return city, district
    return None, None


def _scope(city: str) -> str:
    """The code prefix a city's districts share (municipalities: the whole province)."""
    province = _tables().divisions.get(city[:2] + "0000")
    return city[:2] if province and _municipality_city(province) == city else city[:4]


def district_code(name_or_code: str, city: str | None = None) -> str | None:
    """The current 6-digit code of a county-level division (区, 县, 县级市).

    Accepts a code (320102, kept; a retired one gives its successor: 320103 -> 320104), a name
    (玄武区), an old name (白下区, 海门市), a short name (玄武) or a full one (江苏省南京市玄武区).
    `city` (a code or a name, e.g. the row's cleaned cityCode) chooses among names several
    cities share (鼓楼区: 南京 320106, 徐州 320302, ...); a name not found in that city gives
    None rather than another city's district. Without a city an ambiguous name resolves only
    when exactly one candidate lies in Jiangsu, the standard's province. A city written in the
    value itself (南京市鼓楼区) wins over `city`.
    """
    text = _normalise(name_or_code)
    if _SIX_DIGITS.match(text):
        return _code(text, "county")
    names = _tables().county_names
    context = city_code(city) if city else None
    scope = _scope(context) if context else None
    if text in names:
        return _pick(names[text], scope)
    province, rest = _strip_province(text)
    if province and rest in names:
        return _pick(names[rest], scope or province)
    return _city_prefix(rest, province)[1]


def is_code_of_any_era(code: str) -> bool:
    """Whether `code` is, or once was, a 6-digit GB/T 2260 code (province, city or county)."""
    return code in _divisions()


def division_name(code: str) -> str | None:
    """The latest name of a code (白下区 for the retired 320103), None when unknown."""
    d = _tables().divisions.get(_normalise(code))
    return d.name if d else None


def successors(prefix: str = JIANGSU) -> dict[str, str]:
    """Retired code -> current successor, for documentation and review."""
    return {k: v for k, v in sorted(_tables().successors.items()) if k.startswith(prefix)}
