"""Draft a mapping from a source's catalogue (`etl scaffold`, issue 16).

Writing a mapping by hand for a new schema takes an engineer an hour; most of it is finding which
column holds which standard field. Here every standard field gets a set of spellings (its Chinese
name and a few shorter Chinese aliases, their pinyin in full and as initials, English words from
one synonym table, its identifier) and every source column is scored against them with
rapidfuzz, by its name and its comment. Tables are chosen per dataset by how well their columns
and name fit; columns are assigned greedily by score, each used once per table. The draft says
how sure each guess is, and writes `TODO` where it found nothing for a required field, so that
`etl check --offline` fails only on those lines until someone fills them in.

Enumerated columns get a `values:` map: through a dictionary table when the source keeps its
codes in one (issue 25: type, code, label), else from the codes themselves.

Only the catalogue, a bounded sample of distinct values of enumerated columns and the first rows
of dictionary tables are read, in a read-only session (`etl.source.extract.read_only`); the URL
is never printed or written.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa
from pypinyin import Style, lazy_pinyin
from rapidfuzz import fuzz, process

from etl import standard
from etl.common.errors import ConfigError

# --- the vocabulary: data, in one place --------------------------------------------------------

# Chinese words of the standard's field names -> English spellings a source may use. A field's
# Chinese name is cut into these words (longest first); each word also gives its pinyin.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "隐患": ("hazard", "danger", "hd", "hidden", "trouble", "hidden_danger", "yh"),
    "编号": ("no", "code", "num", "number", "sn"),
    "代码": ("code", "cd", "no"),
    "日期": ("date", "dt", "day", "time"),
    "时间": ("time", "date", "dt"),
    "名称": ("name", "nm", "title"),
    "标题": ("title", "name", "topic", "subject"),
    "主题": ("topic", "subject", "theme", "title"),
    "部门": ("dept", "department", "org"),
    "负责人": ("duty", "charge", "manager", "leader", "mgr", "head"),
    "责任人": ("duty_person", "duty_man", "duty", "charge_person", "responsible", "owner"),
    "责任": ("duty", "resp", "charge"),
    "单位": ("unit", "company", "org", "com", "corp"),
    "电话": ("tel", "phone", "mobile"),
    "联系": ("contact", "link"),
    "整改": ("rectify", "rect", "deal", "fix", "rectification", "correct"),
    "排查": ("check", "chk", "find", "inspect", "found", "discover"),
    "检查": ("check", "chk", "inspect", "insp"),
    "验收": ("accept", "acceptance", "acpt", "verify"),
    "审核": ("review", "audit", "check", "approve"),
    "人": ("man", "person", "er", "or", "user", "staff", "psn", "by"),
    "类别": ("type", "category", "cat", "kind", "class", "lb"),
    "类型": ("type", "kind", "category", "cat"),
    "种类": ("type", "kind", "category"),
    "级别": ("level", "lvl", "grade"),
    "等级": ("level", "lvl", "grade"),
    "层级": ("level", "tier", "lvl"),
    "描述": ("description", "desc", "descr", "content", "detail"),
    "结果": ("result", "status", "state"),
    "结论": ("result", "conclusion", "opinion"),
    "限期": ("deadline", "limit", "due"),
    "风险点": ("risk_point", "point", "rp", "risk"),
    "风险": ("risk",),
    "危险源": ("hazard", "source", "hazard_source", "danger_source", "hz"),
    "设备": ("equip", "equipment", "device", "eq", "dev"),
    "固有": ("inherent", "init", "initial", "orig"),
    "剩余": ("residual", "remain", "rest", "resid"),
    "管控": ("control", "ctrl", "manage"),
    "措施": ("measure", "measures", "msr", "action"),
    "事故": ("accident", "acc"),
    "特征": ("feature", "type", "character"),
    "区域": ("area", "region", "zone"),
    "位置": ("location", "position", "loc", "place", "pos"),
    "地点": ("place", "location", "addr", "site", "venue"),
    "路径": ("path", "url", "dir"),
    "地址": ("address", "addr"),
    "登记": ("register", "reg", "regist", "record"),
    "注册": ("reg", "register", "registered", "regist"),
    "认证": ("cert", "certify", "certifying", "certification"),
    "机构": ("org", "organ", "organization", "organisation", "agency", "inst"),
    "培训": ("train", "training", "trn"),
    "计划": ("plan",),
    "开始": ("start", "begin", "from"),
    "结束": ("end", "finish", "to", "until"),
    "内容": ("content", "contents", "text", "detail"),
    "附件": ("file", "attachment", "attach", "appendix", "evidence"),
    "文件": ("file", "document", "doc", "path"),
    "制度": ("rule", "regulation", "policy", "doc", "system"),
    "上传": ("upload", "up"),
    "发布": ("publish", "release", "issue", "pub"),
    "图库": ("gallery", "image", "img", "picture", "pic"),
    "姓名": ("name", "person_name", "psn_name", "emp_name", "full_name"),
    "身份证号码": ("id_card", "idcard", "id_no", "id_number", "sfz"),
    "证书": ("cert", "certificate", "license", "licence", "lcns"),
    "批准": ("approve", "auth", "issue", "approval"),
    "有效期": ("valid_until", "expiry", "exp", "exp_dt", "expire_date", "exp_date"),
    "有效": ("valid", "expire", "expiry", "valid_until", "exp"),
    "发证": ("issue", "issuer", "cert_issuer", "auth"),
    "机关": ("authority", "org"),
    "是否": ("is", "if", "flag"),
    "安全": ("safety", "sec", "safe"),
    "管理": ("manage", "mgmt", "admin", "management"),
    "总监": ("director", "chief"),
    "员": ("officer", "member", "er", "staff"),
    "作业": ("operator", "operation", "work", "opr", "special_operator"),
    "应急救援": ("rescue", "emergency"),
    "上级": ("parent", "super", "upper", "sup"),
    "法定代表人": ("legal_person", "legal_rep", "deputy", "legal_representative", "corporate"),
    "统一社会信用代码": ("credit_code", "uscc", "social_credit_code", "org_no", "tyshxydm"),
    "地市": ("city", "city_code", "city_name"),
    "区县": ("district", "county", "area_code", "district_code", "district_name"),
    "所属": ("belong", "of", "owner"),
    "项目": ("item", "project"),
    "要求": ("requirement", "req", "require", "standard"),
    "标准": ("standard", "std", "criteria"),
    "审核人": ("reviewer", "auditor", "checker"),
    "排查人": ("finder", "checker", "inspector"),
    "整改人": ("rectifier", "rectify_man", "dealer"),
    "验收人": ("acceptor", "accepter", "checker"),
    "发布人": ("publisher", "releaser", "issuer"),
}

# Shorter or other Chinese names real systems give a standard field, keyed by the standard's
# Chinese name (so a field's aliases hold wherever the name recurs). Each gives pinyin and
# English spellings too.
ALIASES: dict[str, tuple[str, ...]] = {
    "使用单位名称": ("单位名称", "企业名称", "公司名称"),
    "统一社会信用代码": ("信用代码", "社会信用代码"),
    "法定代表人": ("法人", "法人代表"),
    "所在地市": ("地市", "所在市", "城市", "地市代码"),
    "所在区县": ("区县", "所在区", "区县代码"),
    "联系地址": ("地址", "注册地址", "详细地址"),
    "联系人": ("负责人", "部门负责人"),
    "联系电话": ("负责人电话", "联系人电话"),
    "发布人": ("上传人",),
    "上级部门": ("上级部门名称", "父部门"),
    "上传日期": ("上传时间", "发布日期", "发布时间"),
    "是否安全管理部门": ("安全管理部门", "是否安全部门"),
    "所属部门": ("部门", "部门名称"),
    "是否安全总监": ("安全总监",),
    "是否安全员": ("安全员",),
    "特种设备作业人员": ("是否作业人员", "是否特种设备作业人员", "特种作业人员", "作业人员"),
    "特种设备应急救援人员": ("是否应急救援人员", "应急救援人员", "救援人员"),
    "特种设备作业人员证书种类": ("证书种类", "证书类别", "作业类别", "证书类型"),
    "特种设备作业人员证书编号": ("证书编号", "证号"),
    "批准日期": ("发证日期",),
    "有效日期": ("有效期", "有效期至", "证书有效期"),
    "发证部门": ("发证机关", "发证单位", "发证机构", "认证机构"),
    "制度附件": ("附件", "附件名称", "附件路径", "附件地址", "文件", "文件路径"),
    "安全培训计划编号": ("计划编号", "培训计划编号"),
    "安全培训计划名称": ("计划名称", "培训计划名称"),
    "计划开始日期": ("开始日期",),
    "计划结束日期": ("结束日期",),
    "培训标题": ("培训名称", "培训主题"),
    "培训附件": ("附件", "培训记录附件", "附件路径", "附件地址"),
    "事故特征（危害后果）": ("事故特征", "危害后果", "事故类型"),
    "区域/位置": ("区域位置", "区域", "位置", "所在区域"),
    "风险点类型": ("风险类型", "类型"),
    "风险点名称": ("名称",),
    "关联风险点编号": ("风险点编号",),
    "管控措施类别": ("措施类别", "措施分类", "管控措施分类"),
    "风险图库类别": ("图库类别", "类别", "图片类别"),
    "风险图库文件": ("文件", "文件名称", "图片", "文件路径", "图片路径"),
    "隐患描述": ("问题描述", "主要问题", "隐患内容"),
    "限期整改日期": ("整改期限", "整改限期", "限期"),
    "整改结果": ("整改情况", "整改状态"),
    "整改验收日期": ("验收日期",),
    "整改验收结论": ("验收结论", "验收结果"),
    "责任单位": ("责任部门",),
    "检查要求": ("检查内容", "检查标准"),
    "固有风险等级": ("固有风险", "固有等级"),
    "剩余风险等级": ("剩余风险", "剩余等级", "残余风险", "残余风险等级"),
    "设备代码": ("设备编号",),
}

# Last words that systems use for one another: 排查日期 is as often 排查时间, 隐患类别 隐患类型.
ENDINGS: dict[str, tuple[str, ...]] = {
    "日期": ("时间",), "类别": ("类型", "分类"), "类型": ("类别", "分类"), "级别": ("等级",),
    "等级": ("级别",), "编号": ("编码",), "代码": ("编号", "编码"),
}

# Words that name a dataset's table, besides its Chinese name and the target table's name.
DATASET_WORDS: dict[str, tuple[str, ...]] = {
    "01": ("单位", "企业", "公司", "单位基本信息", "company", "enterprise", "unit", "corp", "org"),
    "02": ("部门", "department", "dept", "org_dept"),
    "03": ("人员", "员工", "职工", "employee", "person", "staff", "emp", "user"),
    "04": ("制度", "安全制度", "rule", "regulation", "policy", "rule_doc"),
    "05": ("培训", "培训记录", "培训计划", "training", "train", "training_plan"),
    "06": ("风险点", "risk_point", "risk", "rp"),
    "07": ("危险源", "hazard", "hazard_source", "danger_source"),
    "08": ("风险图库", "图库", "风险图", "risk_image", "gallery", "image", "risk_gallery"),
    "09": ("隐患", "隐患排查", "隐患排查治理", "hidden_danger", "hazard_record", "danger", "hd",
           "trouble"),
}

# Column names of a row's last change and of a soft-delete flag.
UPDATED_AT = re.compile(r"(update|modif|changed|mtime|gxsj|xgsj|zhgx|last_?upd|upd_?time|更新|修改)",
                        re.I)
DELETED = re.compile(r"^(del_?flag|is_?del(eted)?|deleted|delete_?flag|sfsc|scbz|删除标志|是否删除)$",
                     re.I)
DATE_TYPES = ("DATE", "TIME")  # in a column's type name

# Scores are 0-100. A guess at or above PLACE is written; confidence by HIGH / MEDIUM.
HIGH = 95.0
MEDIUM = 85.0
PLACE = 70.0
TABLE_PLACE = 40.0  # a dataset whose best table scores below this is commented out
VALUES_SAMPLE = 50  # distinct values read from an enumerated column ...
SAMPLE_ROWS = 100_000  # ... among its first rows


# --- reading the source ------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    comment: str = ""
    primary_key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()


def read_catalogue(conn: sa.Connection, schema: str | None = None) -> list[Table]:
    """Tables and views of the source with their columns, types, keys and comments, read with
    SQLAlchemy's batch inspection (a few queries for the whole schema, not several per table:
    a vendor's schema may hold a thousand tables)."""
    from sqlalchemy.engine.reflection import ObjectKind

    insp = sa.inspect(conn)
    kind = ObjectKind.TABLE | ObjectKind.VIEW

    def multi(method: str) -> dict:
        try:
            return getattr(insp, f"get_multi_{method}")(schema=schema, kind=kind)
        except NotImplementedError:  # SQLite keeps no comments
            return {}

    columns, comments = multi("columns"), multi("table_comment")
    pks, uniques, indexes = multi("pk_constraint"), multi("unique_constraints"), multi("indexes")
    out = []
    for key in sorted(columns, key=lambda k: k[1]):
        cols = tuple(Column(c["name"], _type_name(c["type"]), (c.get("comment") or "").strip())
                     for c in columns[key])
        unique = [tuple(u["column_names"]) for u in uniques.get(key, [])]
        unique += [tuple(i["column_names"]) for i in indexes.get(key, [])
                   if i.get("unique") and all(i["column_names"])]
        out.append(Table(key[1], cols, ((comments.get(key) or {}).get("text") or "").strip(),
                         tuple((pks.get(key) or {}).get("constrained_columns") or ()), tuple(unique)))
    return out


def _type_name(t: Any) -> str:
    try:
        return str(t)
    except Exception:  # a type the dialect cannot spell: its class is enough here
        return type(t).__name__.upper()


def distinct_values(conn: sa.Connection, table: str, column: str, schema: str | None = None,
                    limit: int = VALUES_SAMPLE, rows: int = SAMPLE_ROWS) -> list[str] | None:
    """Up to `limit` distinct non-blank values of a column among its first `rows` rows, as
    text: the sample a value map is proposed from, bounded however big the table. None when the
    source refuses the read (a column this account may not select): the draft then says so."""
    from etl.mapping import as_key

    t = sa.table(table, sa.column(column), schema=schema)
    first = sa.select(t.c[column].label("v")).where(t.c[column].is_not(None)).limit(rows).subquery()
    stmt = sa.select(first.c.v).distinct().limit(limit)
    try:
        with conn.begin_nested():  # a refusal must not abort the session's other reads
            return sorted({as_key(v) for (v,) in conn.execute(stmt)} - {""})
    except sa.exc.DBAPIError:
        return None


# --- spellings of a field ----------------------------------------------------------------------


def _words(zh: str) -> list[str]:
    """A Chinese name cut into CONCEPTS words, longest first; other characters one by one."""
    zh = re.sub(r"[（）()/、\s]", "", zh)
    out, i = [], 0
    longest = max(map(len, CONCEPTS))
    while i < len(zh):
        for n in range(min(longest, len(zh) - i), 0, -1):
            if zh[i:i + n] in CONCEPTS or n == 1:
                out.append(zh[i:i + n])
                i += n
                break
    return out


def pinyin_forms(zh: str) -> set[str]:
    """Pinyin spellings of a Chinese name: initials and full, run together and with `_` between
    words (`yhbh`, `yh_bh`, `yinhuanbianhao`, `yinhuan_bianhao` for 隐患编号)."""
    words = _words(zh)
    initials = ["".join(p[0] for p in lazy_pinyin(w, style=Style.FIRST_LETTER) if p) for w in words]
    full = ["".join(lazy_pinyin(w)) for w in words]
    return {"".join(initials).lower(), "_".join(initials).lower(), "".join(full).lower(),
            "_".join(full).lower()}


def english_forms(zh: str, limit: int = 400) -> set[str]:
    """English spellings from CONCEPTS: each word's choices combined, `_`-joined and run
    together; words without English are left out (安全培训计划编号 -> plan_no ...)."""
    words = _words(zh)
    options = [_english(w) for w in words if w in CONCEPTS and CONCEPTS[w]]
    out: set[str] = set()
    if zh in CONCEPTS:
        out.update(CONCEPTS[zh])
    for combo in itertools.islice(itertools.product(*options), limit):
        out.add("_".join(combo))
        out.add("".join(combo))
    if words[:1] == ["是否"] and len(options) > 1:  # is_safety_dept is as often safety_dept_flag
        for combo in itertools.islice(itertools.product(*options[1:]), limit):
            out.add("_".join((*combo, "flag")))
    out.discard("")
    return out


def mixed_forms(zh: str, limit: int = 100) -> set[str]:
    """Pinyin initials of the first words, English for the rest, as vendors write them
    (`SG_TYPE` for 事故类型, `LXR_TEL` for 联系人电话, `SH_USER` for 审核人): for each cut
    after the first word, the head's initials joined to the tail's English (a tail word without
    English keeps its initials)."""
    words = [part for w in _words(zh) for part in (
        (w[:-1], w[-1]) if len(w) > 2 and w[:-1] in CONCEPTS and w[-1] in CONCEPTS else (w,))]
    out: set[str] = set()
    for k in range(1, len(words)):
        head = "".join(p[0] for w in words[:k] for p in lazy_pinyin(w, style=Style.FIRST_LETTER)
                       if p).lower()
        tail = [_english(w) if w in CONCEPTS and CONCEPTS[w] else
                ("".join(p[0] for p in lazy_pinyin(w, style=Style.FIRST_LETTER) if p).lower(),)
                for w in words[k:]]
        if all(len(t) == 1 and not (w in CONCEPTS and CONCEPTS[w]) for t, w in zip(tail, words[k:])):
            continue  # all initials: pinyin_forms has it
        for combo in itertools.islice(itertools.product(*tail), limit):
            out.add("_".join((head, *combo)))
    out.discard("")
    return out


def _english(word: str) -> tuple[str, ...]:
    """A word's English spellings, and those of its two parts when both are words too
    (排查人: finder, and check_by from 排查 + 人)."""
    out = list(CONCEPTS[word])
    head, tail = word[:-1], word[-1:]
    if len(word) > 2 and head in CONCEPTS and tail in CONCEPTS:
        out += [f"{a}_{b}" for a in CONCEPTS[head] for b in CONCEPTS[tail]]
    return tuple(dict.fromkeys(out))


def identifier_forms(name: str) -> set[str]:
    """The standard's identifier: `taskNo` -> taskno, task_no."""
    parts = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)
    return {name.lower(), "_".join(p.lower() for p in parts)}


@dataclass(frozen=True)
class Spellings:
    chinese: tuple[str, ...]
    ascii: tuple[str, ...]
    origin: dict[str, str] = field(default_factory=dict, compare=False)  # spelling -> whence
    # spellings that count only when a name is exactly one of them (pinyin initials mixed with
    # English: fuzzily, `fx_picture_file` is too like an English `pictureId`)
    exact: frozenset[str] = frozenset()


@cache
def spellings(f: standard.Field) -> Spellings:
    zh_names: tuple[str, ...] = (f.zh, *ALIASES.get(f.zh, ()))
    zh_names += tuple(z[:-len(end)] + other for z in zh_names for end, others in ENDINGS.items()
                      if z.endswith(end) for other in others)
    origin: dict[str, str] = {}
    mixed: dict[str, str] = {}
    for zh in reversed(zh_names):  # the standard's own name wins where two give one spelling
        mixed.update({_norm_ascii(a): f"pinyin and English for {zh}" for a in mixed_forms(zh)})
        origin.update({_norm_ascii(a): f"English for {zh}" for a in english_forms(zh)})
        origin.update({_norm_ascii(a): f"pinyin of {zh}" for a in pinyin_forms(zh)})
        origin[_norm_zh(zh)] = "the Chinese name" if zh == f.zh else f"alias {zh}"
        if f.kind == "flag":  # is_ and the pinyin initials of what is flagged: IS_AQY, is_tzzy
            bare = zh.removeprefix("是否")
            origin.update({f"is{a}": f"is and pinyin of {bare}" for a in pinyin_forms(bare)
                           if not a.startswith("sf")})
    origin.update({_norm_ascii(a): "the identifier" for a in identifier_forms(f.name)})
    origin.pop("", None)
    chinese = tuple(dict.fromkeys(_norm_zh(z) for z in zh_names))
    exact = frozenset(mixed) - set(origin) - {""}
    origin.update({k: mixed[k] for k in exact})
    return Spellings(chinese, tuple(sorted(set(origin) - set(chinese) - exact)), origin, exact)


def _norm_zh(text: str) -> str:
    return re.sub(r"[\s（）()/、_\-:：,，。]", "", unicodedata.normalize("NFKC", text)).lower()


def _norm_ascii(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


# --- scoring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guess:
    field: str
    column: str
    score: float
    how: str

    @property
    def confidence(self) -> str:
        return "high" if self.score >= HIGH else "medium" if self.score >= MEDIUM else "low"


def _text_score(text: str, sp: Spellings) -> tuple[float, str]:
    """How well a name or comment spells a field: 0-100 and which spelling matched."""
    if not text:
        return 0.0, ""
    if _has_cjk(text):
        t = _norm_zh(text)
        hit = process.extractOne(t, sp.chinese, scorer=fuzz.ratio)
        return (hit[1], _why(hit[0], hit[1], sp)) if hit else (0.0, "")
    t = _norm_ascii(text)
    if not t:
        return 0.0, ""
    if t in sp.exact:
        return 100.0, _why(t, 100.0, sp)
    hit = process.extractOne(t, sp.ascii, scorer=fuzz.ratio)
    if not hit:
        return 0.0, ""
    score = hit[1]
    if len(t) <= 3 and score < 100:  # short names: one letter off is another word
        score -= 15
    return score, _why(hit[0], score, sp)


def _why(spelling: str, score: float, sp: Spellings) -> str:
    """Which spelling a guess rests on, for the draft's comment: `= 'yhbh', pinyin of 隐患编号`."""
    return f"{'=' if score >= 100 else '≈'} {spelling!r}, {sp.origin.get(spelling, 'a spelling')}"


@lru_cache(maxsize=200_000)  # sources repeat column names (id, update_time) across tables
def column_score(f: standard.Field, col: Column) -> tuple[float, str]:
    """A column's fit for a field, by its name and its comment, nudged by type."""
    sp = spellings(f)
    by_name, how = _text_score(col.name, sp)
    how = f"name {how}"
    by_comment, how_c = _text_score(col.comment, sp)
    if by_comment > by_name:
        by_name, how = by_comment, f"comment {how_c}"
    is_date_col = any(t in col.type.upper() for t in DATE_TYPES)
    if is_date_col and not f.is_date:
        by_name -= 20
    if "INT" in col.type.upper() and f.type == "C" and f.kind == "text":
        by_name -= 10  # a number is rarely a name or a text
    return max(0.0, by_name), how


TABLE_STEM = re.compile(r"^(t|tb|tbl|tab|biz|ehs|sys|bus)_", re.I)
_NOT_PREFIXES = {"is", "if", "sf", "create", "update", "del", "id", "no"}


@lru_cache(maxsize=20_000)
def column_prefixes(table: Table) -> tuple[str, ...]:
    """The prefixes a vendor repeats on a table's columns (`YH_REG_ADDR` in `T_YH_INFO`): the
    table's stem after `T_`/`TB_`/`SYS_` (`yh_info`), its first word (`yh`) and its initials
    (`yi`), or a first word most of its columns share; only those at least two columns carry."""
    names = [c.name.lower() for c in table.columns]
    stem = TABLE_STEM.sub("", table.name.lower())
    words = [w for w in stem.split("_") if w]
    candidates = {stem, *words[:1]}
    if len(words) > 1:
        candidates.add("".join(w[0] for w in words))
    heads: dict[str, int] = {}
    for n in names:
        if "_" in n:
            heads[n.split("_", 1)[0]] = heads.get(n.split("_", 1)[0], 0) + 1
    candidates |= {h for h, k in heads.items() if k >= max(3, len(names) / 2)}
    out = [p for p in candidates - _NOT_PREFIXES if p and not _has_cjk(p)
           and sum(n.startswith(p + "_") and len(n) > len(p) + 1 for n in names) >= 2]
    return tuple(sorted(out, key=lambda p: (-len(p), p)))


def _unprefixed(table: Table, col: Column) -> str | None:
    """A column's name without its table's prefix, or None when it carries none."""
    low = col.name.lower()
    for p in column_prefixes(table):
        if low.startswith(p + "_") and len(low) > len(p) + 1:
            return col.name[len(p) + 1:]
    return None


def table_column_score(f: standard.Field, table: Table, col: Column) -> tuple[float, str]:
    """`column_score`, also of the name without the table's prefix (`REG_ADDR` for
    `YH_REG_ADDR`), whichever fits better."""
    score, how = column_score(f, col)
    bare = _unprefixed(table, col)
    if bare:
        s2, how2 = column_score(f, Column(bare, col.type))
        if s2 > score:
            score, how = s2, f"name without its prefix{how2.removeprefix('name')}"
    return score, how


def assign(fields: Iterable[standard.Field], table: Table,
           exclude: frozenset[str] | set[str] = frozenset()) -> list[Guess]:
    """Fields to columns, each column used once: greedily by score, best pair first."""
    pairs = []
    for f in fields:
        for col in table.columns:
            if col.name in exclude:
                continue
            score, how = table_column_score(f, table, col)
            if score >= PLACE:
                pairs.append((score, f.name, col.name, how))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_f: set[str] = set()
    used_c: set[str] = set()
    out = []
    for score, fname, cname, how in pairs:
        if fname in used_f or cname in used_c:
            continue
        used_f.add(fname)
        used_c.add(cname)
        out.append(Guess(fname, cname, round(score, 1), how))
    return out


@cache
def _dataset_spellings(ds: standard.Dataset) -> Spellings:
    words = (ds.zh, ds.zh.removesuffix("信息"), *DATASET_WORDS.get(ds.tx_code, ()))
    chinese = tuple(_norm_zh(w) for w in words if _has_cjk(w))
    ascii_forms = {ds.table} | {w for w in words if not _has_cjk(w)}
    for w in chinese:
        ascii_forms |= pinyin_forms(w)
    return Spellings(chinese, tuple(sorted({_norm_ascii(a) for a in ascii_forms} - {""})))


def _table_name_score(ds: standard.Dataset, table: Table) -> float:
    sp = _dataset_spellings(ds)
    name = re.sub(r"^(t|tb|tbl|biz|ehs|sys)_", "", table.name.lower())
    name = re.sub(r"(?<=.)_(info|list|detail|main|data)$", "", name)
    if _has_cjk(name):
        scorer = fuzz.partial_ratio
        hit = process.extractOne(_norm_zh(name), sp.chinese, scorer=scorer)
    else:
        hit = process.extractOne(_norm_ascii(name), sp.ascii, scorer=fuzz.ratio)
    by_name = hit[1] if hit else 0.0
    by_comment = 0.0
    if table.comment:
        hit = process.extractOne(_norm_zh(table.comment), sp.chinese, scorer=fuzz.partial_ratio)
        by_comment = hit[1] if hit else 0.0
    return max(by_name, by_comment)


def _special_columns(table: Table) -> tuple[str | None, str | None]:
    """The table's last-change column and soft-delete flag, when one is obvious."""
    updated = [c for c in table.columns if UPDATED_AT.search(c.name) or UPDATED_AT.search(c.comment)]
    updated.sort(key=lambda c: not any(t in c.type.upper() for t in DATE_TYPES))
    deleted = [c for c in table.columns if DELETED.match(c.name) or DELETED.match(c.comment)
               or DELETED.match(_unprefixed(table, c) or "")]
    return (updated[0].name if updated else None), (deleted[0].name if deleted else None)


@dataclass
class DatasetDraft:
    ds: standard.Dataset
    table: Table | None
    score: float = 0.0
    guesses: list[Guess] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    key_how: str = ""
    updated_at: str | None = None
    deleted: str | None = None
    # enumerated fields: (value map, values cleaning reads as they are, values not recognised),
    # or None when the source refused the sample
    values: dict[str, tuple[dict[str, str], list[str], list[str]] | None] = field(default_factory=dict)
    # enumerated fields whose codes a dictionary table explains
    dict_values: dict[str, ValueMap] = field(default_factory=dict)


def _fit(ds: standard.Dataset, table: Table) -> tuple[float, list[Guess]]:
    """How well a table holds a dataset: its fields' best columns (required fields count
    double) and its name."""
    updated, deleted = _special_columns(table)
    guesses = assign(ds.fields, table, {c for c in (updated, deleted) if c})
    by_field = {g.field: g.score for g in guesses}
    weights = {f.name: 2.0 if f.required else 1.0 for f in ds.fields}
    fields_fit = sum(weights[n] * s for n, s in by_field.items()) / sum(weights.values())
    return 0.75 * fields_fit + 0.25 * _table_name_score(ds, table), guesses


def choose_tables(tables: list[Table]) -> list[DatasetDraft]:
    """One table per dataset, each table used once: the best-fitting pairs first. A dictionary
    whose name says so (`SYS_DICT_ITEM`, `T_DM_YHJB`) holds no dataset; one found by its
    columns alone (a small department table with a code, a name and a type) still may."""
    tables = [t for t in tables if not (_dictionary_named(t) and dictionary_columns(t))]
    fits = []
    for ds in standard.DATASETS:
        for t in tables:
            score, guesses = _fit(ds, t)
            fits.append((score, ds.tx_code, t.name, guesses))
    fits.sort(key=lambda x: (-x[0], x[1], x[2]))
    by_name = {t.name: t for t in tables}
    chosen: dict[str, DatasetDraft] = {}
    used: set[str] = set()
    for score, tx, tname, guesses in fits:
        if tx in chosen or tname in used or score < TABLE_PLACE:
            continue
        ds = standard.BY_TX_CODE[tx]
        chosen[tx] = DatasetDraft(ds, by_name[tname], round(score, 1), guesses)
        used.add(tname)
    return [chosen.get(ds.tx_code) or DatasetDraft(ds, None) for ds in standard.DATASETS]


def _key(draft: DatasetDraft) -> None:
    t = draft.table
    assert t is not None
    if t.primary_key:
        draft.key, draft.key_how = list(t.primary_key), "the primary key"
    elif t.unique:
        draft.key, draft.key_how = list(t.unique[0]), "a unique constraint"
    else:
        names = {c.name.lower(): c.name for c in t.columns}
        first = draft.ds.fields[0]
        placed = {g.field: g.column for g in draft.guesses}
        if "id" in names:
            draft.key, draft.key_how = [names["id"]], "a column named id: check it is unique"
        elif first.kind == "code" and first.name in placed:
            draft.key, draft.key_how = [placed[first.name]], f"the {first.name} column: check it is unique"
        elif re.search(r"(^id$|_id$|bh$|_no$|code$|编号|主键)", t.columns[0].name, re.I):
            draft.key, draft.key_how = [t.columns[0].name], "the first column: check it is unique"


# --- enumerations ---------------------------------------------------------------------------------


def _value_spellings(canon: str) -> list[str]:
    from etl.standard.clean import ENUM_SYNONYMS

    out = [canon, *ENUM_SYNONYMS.get(canon, ())]
    if canon in ("0", "1"):  # riskType: the codes' meanings
        out = [s for s in out if s not in ("0", "1")]
    return out


def propose_values(f: standard.Field, sample: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """A `values:` map for an enumerated column's codes: (map, codes cleaning already reads,
    codes not recognised). Codes are matched to the standard's values and their synonyms
    (`etl.standard.clean.ENUM_SYNONYMS`) by pinyin initials (SB -> 设备类) and by fuzzy spelling."""
    from etl.standard.clean import MULTI_SPLIT, canon_enum

    enum = f.enum or ()
    mapped: dict[str, str] = {}
    understood: list[str] = []
    unknown: list[str] = []
    for code in sample:
        items = [i for i in MULTI_SPLIT.split(code) if i] if f.separator else [code]
        if items and all(canon_enum(i, enum)[0] in enum for i in items):
            understood.append(code)
            continue
        best, best_score = None, 0.0
        for canon in enum:
            for s in _value_spellings(canon):
                if code.isascii() and code.isalpha():
                    initials = "".join(lazy_pinyin(s, style=Style.FIRST_LETTER)).lower()
                    score = 100.0 if code.lower() in (initials, initials[:len(code)]) and \
                        len(code) >= 2 else 0.0
                else:
                    score = fuzz.ratio(_norm_zh(code), _norm_zh(s)) if _has_cjk(code) else 0.0
                    if _has_cjk(code) and _norm_zh(s).startswith(_norm_zh(code)):
                        score = max(score, 90.0)
                if score > best_score:
                    best, best_score = canon, score
        if best is not None and best_score >= 80:
            mapped[code] = best
        else:
            unknown.append(code)
    return mapped, understood, unknown


# --- dictionaries ---------------------------------------------------------------------------------

# Most Chinese business systems keep an enumeration's codes in a dictionary table: a code, its
# label and, in a generic one, the type that groups codes into a list. Column names (without
# the table's prefix), each list in order of preference; comments when no name fits. (Not zd,
# the pinyin of 字典: it is also that of 制度, a dataset's table.)
DICT_CODE = ("item_code", "item_value", "dict_value", "code_value", "dict_item_code", "dm", "bm",
             "code", "value", "val", "item_key", "dict_key", "编码", "代码", "字典值")
DICT_LABEL = ("item_name", "item_label", "item_text", "dict_label", "label", "mc", "name", "text",
              "dict_name", "code_name", "value_name", "display_name", "名称", "标签")
DICT_TYPE = ("dict_type", "type_code", "code_type", "dict_code", "type_key", "lx", "type",
             "category", "group_code", "dict_id", "type_id", "kind", "字典类型", "类型")
DICT_SUFFIXES = {"code": ("_code", "_value", "_val", "_dm", "_bm", "_key"),
                 "label": ("_name", "_label", "_text", "_mc"), "type": ("_type", "_lx", "_kind")}
DICT_COMMENTS = {"type": re.compile(r"类型|类别|分类"), "code": re.compile(r"编码|代码|字典值|键值"),
                 "label": re.compile(r"名称|标签|显示")}
# a name that says dictionary: dict, code, enum, lookup, dm/bm (代码/编码's initials) as a word
DICT_NAME = re.compile(r"(dict|dic$|(^|_)[db]m(_|$)|code|enum|lookup|字典|代码|编码)", re.I)
DICT_META = re.compile(r"^(id|\w*_id|sort\w*|order\w*|seq|remark|memo|status|state|enabled|"
                       r"is_default|css_class|list_class|create\w*|update\w*|modif\w*|del\w*|"
                       r"parent\w*|pid|version|tenant\w*|description|descr?|bz|px|sfyx|zt|"
                       r"colou?r|icon|style|\w*_class)$", re.I)
DICT_EXTRA = 2  # other columns a dictionary may have
DICT_ROWS = 5000  # rows read from one dictionary table


@dataclass
class Dictionary:
    table: str
    code: str
    label: str
    type: str | None
    entries: dict[str | None, dict[str, str]]  # type (None: a dedicated table) -> {code: label}


@dataclass
class ValueMap:
    """A `values:` map read from a dictionary: code -> the standard's value (None: no label
    matched, a TODO), each code's label, how sure, and where it came from."""

    mapped: dict[str, str | None]
    labels: dict[str, str]
    confidence: str
    source: str


def dictionary_columns(table: Table) -> tuple[str, str, str | None] | None:
    """(code, label, type) when a table looks like a dictionary, else None: a code and a label
    column, few other columns besides ids, sort orders, remarks and timestamps, and a type
    column, a name that says dictionary (`SYS_DICT_ITEM`, `T_DM_YHJB`), or nothing else (a
    code table `T_HIDDEN_LEVEL (CODE, NAME)`)."""
    bare = {c.name: (_unprefixed(table, c) or c.name).lower() for c in table.columns}
    taken: set[str] = set()

    def by_name(wanted: tuple[str, ...]) -> str | None:
        for w in wanted:
            for c in table.columns:
                if c.name not in taken and (bare[c.name] == w or c.name.lower() == w):
                    taken.add(c.name)
                    return c.name
        return None

    def by_comment(kind: str) -> str | None:
        for c in table.columns:
            if c.name not in taken and c.comment and DICT_COMMENTS[kind].search(c.comment) and \
                    (kind == "type" or not DICT_COMMENTS["type"].search(c.comment)):
                taken.add(c.name)
                return c.name
        return None

    def by_suffix(kind: str) -> str | None:
        for c in table.columns:
            if c.name not in taken and bare[c.name].endswith(DICT_SUFFIXES[kind]):
                taken.add(c.name)
                return c.name
        return None

    code, label, typ = by_name(DICT_CODE), by_name(DICT_LABEL), by_name(DICT_TYPE)
    typ = typ or by_suffix("type")
    code, label = code or by_suffix("code"), label or by_suffix("label")
    typ = typ or by_comment("type")
    code, label = code or by_comment("code"), label or by_comment("label")
    if not code or not label:
        return None
    others = [c for c in table.columns if c.name not in taken and not DICT_META.match(bare[c.name])
              and not DICT_META.match(c.name)]
    if len(others) > DICT_EXTRA or not (typ or not others or _dictionary_named(table)):
        return None
    return code, label, typ


def _dictionary_named(table: Table) -> bool:
    return bool(DICT_NAME.search(table.name) or re.search(r"字典|代码表|编码表|码表", table.comment))


def read_dictionaries(conn: sa.Connection, tables: list[Table], schema: str | None = None,
                      rows: int = DICT_ROWS) -> list[Dictionary]:
    """The rows of every table that looks like a dictionary, at most `rows` each, as text; a
    table the source refuses to read is left out."""
    from etl.mapping import as_key

    out = []
    for t in tables:
        cols = dictionary_columns(t)
        if cols is None:
            continue
        code, label, typ = cols
        names = [c for c in (typ, code, label) if c]
        st = sa.table(t.name, *(sa.column(c) for c in names), schema=schema)
        stmt = sa.select(*(st.c[c] for c in names)).limit(rows)
        try:
            with conn.begin_nested():
                read = conn.execute(stmt).all()
        except sa.exc.DBAPIError:
            continue
        entries: dict[str | None, dict[str, str]] = {}
        for r in read:
            ty = as_key(r[0]) if typ else None
            c, lab = r[-2], r[-1]
            if c is None or lab is None or as_key(c) == "":
                continue
            entries.setdefault(ty, {})[as_key(c)] = str(lab).strip()
        if entries:
            out.append(Dictionary(t.name, code, label, typ, entries))
    return out


# Labels systems give an enumeration value that no spelling rule finds, for dictionaries only
# (a guess the user checks, never what cleaning reads): the top hidden-danger level is 重大 in
# the work-safety law's wording, 严重 in the standard's.
LABEL_HINTS: dict[str, tuple[str, ...]] = {
    "严重事故隐患": ("重大事故隐患", "重大隐患", "重大"),
    # a lift's 困人 is the standard's 受困; a danger accepted or closed (验收, 闭环, 销号) is
    # rectified: the usual states of a hidden-danger workflow
    "故障或者受困（滞留）": ("困人", "电梯困人", "关人"),
    "已整改": ("已验收", "待验收", "验收中", "已闭环", "已销号", "已关闭"),
}


def _fuzzy_value(text: str, enum: tuple[str, ...]) -> tuple[str | None, float]:
    """The enumeration value a Chinese label or code spells most like (its synonyms included):
    fuzzy ratio, 90 when the value starts with the text, 85 when the text starts with one of
    the value's spellings (设备设施 and 设备), 80-84 when it holds one elsewhere (安全管理类 and
    管理类; the longer the spelling held, the surer)."""
    best, best_score, second = None, 0.0, 0.0
    if not _has_cjk(text):
        return None, 0.0
    for canon in enum:
        top = 0.0
        for s in (*_value_spellings(canon), *LABEL_HINTS.get(canon, ())):
            score = fuzz.ratio(_norm_zh(text), _norm_zh(s))
            if _norm_zh(s).startswith(_norm_zh(text)):
                score = max(score, 90.0)
            elif len(_norm_zh(s)) >= 2 and _norm_zh(text).startswith(_norm_zh(s)):
                score = max(score, 85.0)
            elif len(_norm_zh(s)) >= 2 and _norm_zh(s) in _norm_zh(text):
                score = max(score, 80.0 + 4.0 * len(_norm_zh(s)) / len(_norm_zh(text)))
            top = max(top, score)
        if top > best_score:
            best, best_score, second = canon, top, best_score
        elif top > second:
            second = top
    return (best, best_score) if best_score > second else (None, 0.0)  # a tie is no match


def label_value(f: standard.Field, label: str) -> tuple[str | None, float]:
    """A dictionary label's standard value and how sure: 100 the standard's own word (width and
    parentheses aside), 90 a synonym cleaning knows (一般 for 一般风险), under 85 a fuzzy
    likeness (重大隐患 for 严重事故隐患 is none: such labels are left to the user)."""
    from etl.standard.clean import FLAG_WORDS, canon_enum

    enum = f.enum or ()
    if f.kind == "flag":  # a yes/no list (是/否, Y/N, 有/无): the standard's 1 and 0
        flag = FLAG_WORDS.get(label.strip().lower())
        return (flag, 100.0) if flag is not None else (None, 0.0)
    canon, rule = canon_enum(label, enum)
    if canon in enum:
        return canon, 90.0 if rule == "enum_synonym" else 100.0
    best, score = _fuzzy_value(label, enum)
    return (best, min(score, 80.0)) if best is not None and score >= 80 else (None, 0.0)


def _code_key(code: str) -> str:
    """A code as a list would hold it whatever its writing: `01` and `1`, `y` and `Y`."""
    code = code.strip()
    return (code.lstrip("0") or "0") if code.isdigit() else code.upper()


def _entries_for(codes: list[str], entries: dict[str, str]) -> dict[str, str] | None:
    """{code: label} for every sampled code a list holds (as written, or with leading zeros
    or case aside when that names one entry only), or None when it lacks one."""
    loose: dict[str, list[str]] = {}
    for k in entries:
        loose.setdefault(_code_key(k), []).append(k)
    out = {}
    for c in codes:
        if c in entries:
            out[c] = entries[c]
        elif len(loose.get(_code_key(c), ())) == 1:
            out[c] = entries[loose[_code_key(c)][0]]
        else:
            return None
    return out


def _quoted_type(v: str) -> str:
    return f"'{v}'" if re.fullmatch(r"[\w.\-]+", v) else _q(v)


def propose_from_dictionaries(f: standard.Field, column: str, sample: list[str],
                              dictionaries: list[Dictionary], bare: str | None = None) -> ValueMap | None:
    """A `values:` map for an enumerated column whose codes all stand in one dictionary list
    (one type of a generic dictionary, or a dedicated code table), through the codes' labels;
    None when no list holds them all with at least half its labels matching the standard."""
    from etl.standard.clean import MULTI_SPLIT

    split = (lambda v: [i for i in MULTI_SPLIT.split(v) if i]) if f.separator else (lambda v: [v])
    codes = sorted({i for v in sample for i in split(v)})
    if not codes:
        return None
    cands = []
    for d in dictionaries:
        for ty, listed in d.entries.items():
            entries = _entries_for(codes, listed)
            if entries is None:
                continue
            matched = {c: label_value(f, entries[c]) for c in codes}
            n = sum(v is not None for v, _ in matched.values())
            if n * 2 < len(codes):
                continue
            total = sum(s for _, s in matched.values())
            name = ty if ty is not None else TABLE_STEM.sub("", d.table)
            hint = max(fuzz.ratio(_norm_ascii(name), _norm_ascii(column)),
                       fuzz.ratio(_norm_ascii(name), _norm_ascii(bare or column)),
                       _text_score(name, spellings(f))[0])
            cands.append((hint >= MEDIUM, n, total, hint, d.table, ty or "", d, ty, matched,
                          entries))
    if not cands:
        return None
    # a list named like the column (type 'point_type' for FX_POINT_TYPE) first, then the one
    # whose labels match the standard best
    cands.sort(key=lambda c: (-c[0], -c[1], -c[2], -c[3], c[4], c[5]))
    named, n, total, _, _, _, d, ty, matched, entries = cands[0]
    tied = any(c[1] == n and c[2] == total for c in cands[1:])
    lows = [s for v, s in matched.values()]
    confidence = "high" if min(lows) >= HIGH and not tied else \
        "medium" if min(lows) >= MEDIUM else "low"
    mapped: dict[str, str | None] = {}
    labels: dict[str, str] = {}
    for v in sample:
        items = split(v)
        values = [matched[i][0] for i in items]
        mapped[v] = None if None in values else (f.separator or "").join(values)  # type: ignore[arg-type]
        labels[v] = "、".join(entries[i] for i in items)
    source = f"{_q(d.table)} where {_q(d.type)} = {_quoted_type(ty)}" if d.type and ty is not None \
        else _q(d.table)
    return ValueMap(mapped, labels, confidence, source)


# --- the draft ------------------------------------------------------------------------------------


def plan(tables: list[Table]) -> list[DatasetDraft]:
    drafts = choose_tables(tables)
    for d in drafts:
        if d.table is None:
            continue
        _key(d)
        d.updated_at, d.deleted = _special_columns(d.table)
    return drafts


_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "todo"}


def _q(v: str) -> str:
    """A YAML scalar: plain when safe, else a double-quoted string with every character that
    is not printable escaped (a source's names and values may hold line breaks, U+2028 ...)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) and v.lower() not in _YAML_WORDS:
        return v
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                   else f"\\U{ord(ch):08x}" for ch in json.dumps(v, ensure_ascii=False))


def _listed(values: list[str], limit: int = 200) -> str:
    """Source values inside a YAML comment: each quoted and escaped, so none ends the comment."""
    text = ", ".join(_q(v) for v in values)
    return text if len(text) <= limit else text[:limit] + " …"


def _comment(lines: list[str], text: str, width: int = 46) -> None:
    lines[-1] = f"{lines[-1]:<{width}}# {text}" if len(lines[-1]) < width else f"{lines[-1]}  # {text}"


def render(drafts: list[DatasetDraft], *, source_key: str, source_value: str, org: str | None,
           name: str | None, origin: str, schema: str | None = None) -> str:
    """The draft mapping as YAML with a comment beside every guess."""
    lines = [
        f"# Draft by `etl scaffold` from {origin}: every column below is a guess.",
        f"# Confidence per guess: high (score >= {HIGH:g}), medium (>= {MEDIUM:g}), low (>= {PLACE:g}).",
        "# Check each, fill every TODO (`etl check --offline` lists them), then `etl check` online.",
        "unit:",
        f"  orgNo: {_q(org) if org else 'TODO'}",
    ]
    if not org:
        _comment(lines, "the unit's unified social credit code (18 characters)")
    lines.append(f"  comName: {_q(name) if name else 'TODO'}")
    if not name:
        _comment(lines, "the unit's name (单位名称)")
    lines += ["source:", f"  {source_key}: {_q(source_value)}", "datasets:"]
    for d in drafts:
        ds = d.ds
        if d.table is None:
            lines.append(f'  # "{ds.tx_code}": no table looks like {ds.zh} ({ds.structure}): '
                         f"write it by hand if the source holds it")
            continue
        table_name = f"{schema}.{d.table.name}" if schema else d.table.name
        lines.append(f'  "{ds.tx_code}":')
        _comment(lines, f"{ds.zh}: table score {d.score:g}")
        lines.append(f"    table: {_q(table_name)}")
        if d.table.comment:
            _comment(lines, _q(d.table.comment[:60]))
        if d.key:
            lines.append(f"    key: [{', '.join(_q(k) for k in d.key)}]")
            _comment(lines, d.key_how)
        else:
            lines.append("    key: TODO")
            _comment(lines, "no primary key: name the column(s) that identify a row")
        if d.updated_at:
            lines.append(f"    updated_at: {_q(d.updated_at)}")
            _comment(lines, "last change, for incremental runs")
        if d.deleted:
            lines.append(f"    deleted: {{column: {_q(d.deleted)}, value: 1}}")
            _comment(lines, "soft delete: check the value that marks a deleted row")
        lines.append("    fields:")
        placed = {g.field: g for g in d.guesses}
        for f in ds.fields:
            g = placed.get(f.name)
            if g is None:
                if f.required and not (ds.tx_code == "01" and f.name in ("orgNo", "comName")):
                    lines.append(f"      {f.name}: TODO")
                    _comment(lines, f"required: {f.zh}; no column found")
                else:
                    lines.append(f"      # {f.name}:")
                    _comment(lines, f"{f.zh}: no column found")
                continue
            note = f"{g.confidence} {g.score:g}: {f.zh}; {g.how}"
            vals = d.values.get(f.name, ({}, [], []))
            vm = d.dict_values.get(f.name)
            if vm is not None:
                lines.append(f"      {f.name}:")
                _comment(lines, note)
                lines.append(f"        column: {_q(g.column)}")
                body = ", ".join(f"{_q(k)}: {_q(v) if v else 'TODO'}" for k, v in vm.mapped.items())
                lines.append(f"        values: {{{body}}}")
                _comment(lines, f"{vm.confidence}: from {vm.source}: check them")
                todo = [f"{k} = {vm.labels[k]}" for k, v in vm.mapped.items() if v is None]
                if todo:
                    lines.append(f"        # TODO labels that match no value of {f.name} "
                                 f"({'、'.join(f.enum or ())}): {_listed(todo)}")
            elif vals is None:
                lines.append(f"      {f.name}: {_q(g.column)}")
                _comment(lines, note)
                lines.append("        # TODO its values could not be read: map its codes under values:")
            elif vals[0] or vals[2]:
                mapped, understood, unknown = vals
                lines.append(f"      {f.name}:")
                _comment(lines, note)
                lines.append(f"        column: {_q(g.column)}")
                if mapped:
                    body = ", ".join(f"{_q(k)}: {_q(v)}" for k, v in mapped.items())
                    lines.append(f"        values: {{{body}}}")
                    _comment(lines, "proposed from the column's values: check them")
                if understood:
                    lines.append(f"        # read by cleaning as they are: {_listed(understood)}")
                if unknown:
                    lines.append(f"        # TODO values not recognised (map them under values:): "
                                 f"{_listed(unknown)}")
            else:
                lines.append(f"      {f.name}: {_q(g.column)}")
                _comment(lines, note)
    return "\n".join(lines) + "\n"


def scaffold(conn: sa.Connection, *, schema: str | None = None) -> list[DatasetDraft]:
    """Read the source's catalogue (and a sample of each enumerated column) and plan a draft."""
    tables = read_catalogue(conn, schema)
    if not tables:
        raise ConfigError(f"the source has no tables{f' in schema {schema}' if schema else ''}: "
                          f"check the URL's database{' or --schema' if not schema else ''}")
    drafts = plan(tables)
    dictionaries = read_dictionaries(conn, tables, schema)
    for d in drafts:
        if d.table is None:
            continue
        for g in d.guesses:
            f = d.ds.field(g.field)
            if f.enum:
                sample = distinct_values(conn, d.table.name, g.column, schema)
                col = next(c for c in d.table.columns if c.name == g.column)
                vm = propose_from_dictionaries(f, g.column, sample, dictionaries,
                                               _unprefixed(d.table, col)) if sample else None
                if vm is not None:
                    d.dict_values[f.name] = vm
                elif f.kind != "flag":  # a flag's codes cleaning reads (1/0, Y/N, 是/否) or a yes/no list explains
                    d.values[f.name] = None if sample is None else propose_values(f, sample)
    return drafts


def write_draft(text: str, out: Path, force: bool = False) -> None:
    """Write the draft, refusing to replace a file unless `force`."""
    if out.exists() and not force:
        raise ConfigError(f"{out} exists: pass --force to overwrite it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def truth_pairs(drafts: list[DatasetDraft]) -> dict[str, tuple[str | None, dict[str, Guess]]]:
    """{txCode: (table, {field: guess})}: what the draft placed, for measuring it."""
    return {d.ds.tx_code: (d.table.name if d.table else None, {g.field: g for g in d.guesses})
            for d in drafts if d.table is not None}


def value_maps(drafts: list[DatasetDraft]) -> dict[str, dict[str, tuple[str, dict[str, str], str]]]:
    """{txCode: {field: (column, values map without its TODOs, confidence)}}: the value maps a
    draft proposes, for measuring them. A map from the column's own values is never high."""
    out: dict[str, dict[str, tuple[str, dict[str, str], str]]] = {}
    for d in drafts:
        columns = {g.field: g.column for g in d.guesses}
        for name, vm in d.dict_values.items():
            out.setdefault(d.ds.tx_code, {})[name] = (
                columns[name], {k: v for k, v in vm.mapped.items() if v is not None}, vm.confidence)
        for name, vals in d.values.items():
            if vals and vals[0]:
                out.setdefault(d.ds.tx_code, {})[name] = (columns[name], dict(vals[0]), "medium")
    return out


def run(*, url_env: str | None, conn_id: str | None, org: str | None, name: str | None,
        out: Path | None, schema: str | None, force: bool) -> str:
    """`etl scaffold`: connect read-only, draft, write (or return) the YAML."""
    from etl.source.connect import engine_for, read_only, resolve_url
    from etl.mapping import SourceSpec

    if out is not None and out.exists() and not force:
        raise ConfigError(f"{out} exists: pass --force to overwrite it, or choose another --out")
    spec = SourceSpec(url_env=url_env) if url_env else SourceSpec(conn_id=conn_id)
    url = resolve_url(spec)
    engine = engine_for(url, spec)
    with read_only(engine, spec.statement_timeout_s) as conn:
        try:
            drafts = scaffold(conn, schema=schema)
        except sa.exc.DBAPIError as e:
            from etl.common.errors import SourceError
            from etl.source.connect import safe_error

            raise SourceError(f"reading the catalogue of {spec.describe()} failed: "
                              f"{safe_error(e, url)}") from None
    text = render(drafts, source_key="url_env" if url_env else "conn_id",
                  source_value=url_env or conn_id or "", org=org, name=name,
                  origin=spec.describe(), schema=schema)
    if out is not None:
        write_draft(text, out, force)
    return text
