"""The Jiangsu standard's Appendix A as data: the one place the field lists live.

DDL (`etl.target`), validation schemas (`etl.standard.validate`), the mapping checker and the docs all
read this module; nothing else restates a field list. Decisions taken where the standard
contradicts itself are recorded in `../shared/spec/fields.md` and in the README.

Lengths: the standard gives lengths only for the A.2 envelope. For business fields we chose
lengths generous enough for real data and small enough to index; a value longer than its
field's length is rejected, never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from etl.common.masking import PERSONAL, Personal

FieldType = Literal["C", "N", "D", "M"]
Frequency = Literal["daily", "weekly"]

# Semantic kinds drive cleaning and validation beyond the type letter.
Kind = Literal[
    "text", "uscc", "idcard", "phone", "regno", "flag", "city", "district", "date", "code", "enum"
]

RISK_LEVELS = ("低风险", "一般风险", "较大风险", "重大风险")
CONTROL_LEVELS = ("公司（厂）级", "部门（装置、车间）级", "岗位（班组）级")
ACCIDENT_TYPES = (
    "爆炸", "爆燃", "泄漏", "倾覆", "变形", "断裂", "损伤", "坠落", "碰撞", "剪切", "挤压", "失控",
    "故障或者受困（滞留）",
)
LICENCE_KINDS = (
    "特种设备安全管理", "锅炉作业", "压力容器作业", "气瓶作业", "电梯作业", "起重机作业", "客运索道作业",
    "大型游乐设施作业", "场（厂）内专用机动车辆作业", "安全附件维修作业", "特种设备焊接作业",
)
MEASURE_TYPES = ("工程技术措施", "管理措施", "培训教育措施", "个体防护措施", "应急措施")
GALLERY_TYPES = ("风险四色分布图", "设备风险告知牌", "岗位风险告知卡", "其他")
TROUBLE_TYPES = ("设备类", "管理类", "作业过程（人员）类", "环境类")
TROUBLE_LEVELS = ("一般事故隐患", "较大事故隐患", "严重事故隐患")
DEAL_INFOS = ("已整改", "未整改")
ACCEPT_INFOS = ("整改验收合格", "整改验收不合格")
FLAG_VALUES = ("0", "1")
RISK_TYPES = ("0", "1")


@dataclass(frozen=True)
class Field:
    """One field of a structure: identifier, Chinese name, type letter and rules."""

    name: str
    zh: str
    type: FieldType
    length: int
    required: bool = False
    kind: Kind = "text"
    enum: tuple[str, ...] | None = None
    separator: str | None = None  # multi-valued enumerations/lists are joined by this
    note: str = ""
    #: What the field holds of a person, if anything: such a field is *protected*. Its values
    #: are masked wherever a person reads them (`etl.common.masking.shown`), whether or not a
    #: data key is set.
    personal: Personal | None = None
    #: Also stored encrypted when a data key is set (`etl.target.crypt`); only a protected
    #: field may be.
    encrypted: bool = False

    def __post_init__(self) -> None:
        # the policy follows the definition: what kind says is personal is protected, and
        # nothing is encrypted at rest that a reader would see in clear
        if self.personal is not None and self.personal not in PERSONAL:
            raise ValueError(f"{self.name}: personal must be one of {PERSONAL}, not {self.personal!r}")
        if self.kind in ("idcard", "phone") and self.personal != self.kind:
            raise ValueError(f"{self.name}: a field of kind {self.kind!r} must be personal={self.kind!r}")
        if self.encrypted and self.personal is None:
            raise ValueError(f"{self.name}: an encrypted field must say what it holds (personal=...)")

    @property
    def storage_length(self) -> int:
        """The target column's length: room for the ciphertext of an `encrypted` field
        (`enc:v1:<key id>:<base64>`); validation still checks `length` on the plaintext."""
        return max(self.length, ENCRYPTED_LENGTH) if self.encrypted else self.length

    @property
    def is_date(self) -> bool:
        return self.type == "D"


@dataclass(frozen=True)
class DateOrder:
    """`before` must not be later than `after` when both are present."""

    before: str
    after: str


@dataclass(frozen=True)
class RequiredWhen:
    """`fields` are required when `field` holds one of `values` (or any value when None)."""

    field: str
    values: tuple[str, ...] | None
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Reference:
    """`field` must name an existing `target_field` of dataset `tx_code` of the same unit."""

    field: str
    tx_code: str
    target_field: str


@dataclass(frozen=True)
class Dataset:
    """One data category (A.3-A.11): its txCode, target table and fields."""

    tx_code: str
    table: str
    structure: str
    zh: str
    frequency: Frequency
    fields: tuple[Field, ...]
    date_orders: tuple[DateOrder, ...] = ()
    required_when: tuple[RequiredWhen, ...] = ()
    references: tuple[Reference, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{name!r} is not a field of {self.structure} ({self.tx_code})")

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)


ENCRYPTED_LENGTH = 255  # storage length of an encrypted field (etl.target.crypt)


def encrypted_fields(ds: "Dataset") -> tuple[Field, ...]:
    """The fields of a dataset that hold personal data encrypted at rest with a data key."""
    return tuple(f for f in ds.fields if f.encrypted)


def protected_fields(ds: "Dataset") -> tuple[Field, ...]:
    """The fields of a dataset whose values are masked wherever a person reads them: those
    that say what they hold of a person (`Field.personal`), encrypted or not."""
    return tuple(f for f in ds.fields if f.personal is not None)


def _c(name: str, zh: str, length: int = 100, **kw) -> Field:
    return Field(name, zh, "C", length, **kw)


def _d(name: str, zh: str, **kw) -> Field:
    return Field(name, zh, "D", 10, kind="date", **kw)


def _flag(name: str, zh: str, **kw) -> Field:
    return Field(name, zh, "N", 1, kind="flag", enum=FLAG_VALUES, note="1 是 / 0 否", **kw)


def _m(name: str, zh: str, **kw) -> Field:
    return Field(name, zh, "M", 500, note="a file name, path or URL of the document", **kw)


def _phone(name: str, zh: str, **kw) -> Field:
    return Field(name, zh, "C", 20, kind="phone", personal="phone", encrypted=True, **kw)


def _name(name: str, zh: str, length: int = 50, **kw) -> Field:
    """A person's name (姓名, and the 人 fields: 联系人, 责任人, 排查人 ...): masked to the
    family name; not encrypted (README, "Encryption at rest")."""
    return Field(name, zh, "C", length, personal="name", **kw)


ENVELOPE: tuple[Field, ...] = (
    Field("ID", "记录ID", "C", 64, required=True, note="primary key"),
    Field("batchNo", "批次号", "C", 16, required=True, kind="code", note="YYYYMMDD + 8-digit daily sequence"),
    Field("txCode", "数据信息类别", "N", 2, required=True, kind="code", note="'01'..'09', zero kept"),
    Field("busType", "数据操作标识", "C", 1, required=True, enum=("I", "U", "D")),
    Field("updateDate", "更新日期", "D", 10, required=True, kind="date", note="loader's write date, CST"),
)

UNIT_KEY = "orgNo"

DATASETS: tuple[Dataset, ...] = (
    Dataset("01", "unit_info", "A.3", "单位基本信息", "weekly", (
        _c("comName", "使用单位名称", 200, required=True),
        _c("orgNo", "统一社会信用代码", 18, required=True, kind="uscc"),
        _name("deputy", "法定代表人"),
        _c("cityCode", "所在地市", 6, required=True, kind="city", note="GB/T 2260 code"),
        _c("aeraCode", "所在区县", 6, required=True, kind="district", note="GB/T 2260 code"),
        _c("address", "联系地址", 200),
        _name("linkMan", "联系人"),
        _phone("linkTel", "联系电话"),
    )),
    Dataset("02", "unit_dept", "A.4", "单位部门信息", "weekly", (
        _c("deptName", "部门名称", required=True),
        _c("dParentName", "上级部门", 200, note="a top department's parent is the unit itself"),
        _flag("isSecDept", "是否安全管理部门", required=True),
        _name("dLinkMan", "联系人"),
        _phone("dLinkTel", "联系电话"),
    )),
    Dataset("03", "unit_person", "A.5", "人员基本信息", "weekly", (
        _name("psnName", "姓名", required=True),
        _c("idCardNo", "身份证号码", 18, required=True, kind="idcard", personal="idcard",
           encrypted=True),
        _c("deptName", "所属部门"),
        _flag("isSecChief", "是否安全总监", required=True),
        _flag("isSecManager", "是否安全员", required=True),
        _flag("isOpr", "特种设备作业人员", required=True),
        _flag("isRes", "特种设备应急救援人员", required=True),
        _c("lcnsKind", "特种设备作业人员证书种类", 50, kind="enum", enum=LICENCE_KINDS),
        _c("certNo", "特种设备作业人员证书编号", 50, kind="code", personal="identifier",
           encrypted=True),
        _d("authDate", "批准日期"),
        _d("endDate", "有效日期"),
        _c("authCom", "发证部门"),
    ),
        date_orders=(DateOrder("authDate", "endDate"),),
        required_when=(RequiredWhen("isOpr", ("1",), ("lcnsKind", "certNo")),),
        references=(Reference("deptName", "02", "deptName"),),
    ),
    Dataset("04", "safety_rule", "A.6", "制度建设信息", "weekly", (
        _c("fileName", "制度名称", 200, required=True),
        _m("fileAppendix", "制度附件", required=True),
        _d("uploadDate", "上传日期", required=True),
        _name("publisher", "发布人"),
    )),
    Dataset("05", "safety_training", "A.7", "安全培训信息", "weekly", (
        _c("planNo", "安全培训计划编号", 50, required=True, kind="code"),
        _c("planName", "安全培训计划名称", 200, required=True),
        _d("startDate", "计划开始日期"),
        _d("endDate", "计划结束日期"),
        _c("trainTitle", "培训标题", 200, required=True),
        _d("trainDate", "培训日期", required=True),
        _c("trainAddress", "培训地点", 200),
        _c("trainContent", "培训内容", 2000),
        _m("trainFile", "培训附件"),
    ),
        date_orders=(DateOrder("startDate", "endDate"),),
    ),
    Dataset("06", "risk_point", "A.8", "风险点信息", "daily", (
        _c("riskNo", "风险点编号", 50, required=True, kind="code"),
        _c("regNo", "设备代码", 20, kind="regno"),
        _c("riskName", "风险点名称", 200, required=True),
        Field("riskType", "风险点类型", "N", 1, required=True, kind="enum", enum=RISK_TYPES,
              note="0 设备风险, 1 作业过程（人员）风险"),
        _d("registDate", "登记日期"),
        _c("accidentType", "事故特征（危害后果）", 200, kind="enum", enum=ACCIDENT_TYPES, separator="、"),
        _c("commonAddr", "区域/位置", 200),
        _c("inherentriskLevel", "固有风险等级", 10, required=True, kind="enum", enum=RISK_LEVELS),
        _c("remainriskLevel", "剩余风险等级", 10, required=True, kind="enum", enum=RISK_LEVELS),
        _c("controlLevel", "管控层级", 20, required=True, kind="enum", enum=CONTROL_LEVELS),
        _c("dutyName", "责任单位", 200, required=True),
        _name("dutyMan", "责任人", 200, required=True, separator="，"),
        _name("checkMan", "审核人"),
        _d("checkDate", "审核日期"),
    ),
        date_orders=(DateOrder("registDate", "checkDate"),),
        required_when=(RequiredWhen("riskType", ("0",), ("regNo",)),),
    ),
    Dataset("07", "hazard_source", "A.9", "危险源信息", "daily", (
        _c("sourceNo", "危险源编号", 50, required=True, kind="code"),
        _c("riskNo", "关联风险点编号", 50, required=True, kind="code"),
        _c("checkItem", "检查项目", 200, required=True),
        _c("checkContent", "检查要求", 2000),
        _c("inherentriskLevel", "固有风险等级", 10, required=True, kind="enum", enum=RISK_LEVELS),
        _c("remainriskLevel", "剩余风险等级", 10, required=True, kind="enum", enum=RISK_LEVELS),
        _c("controlLevel", "管控层级", 20, required=True, kind="enum", enum=CONTROL_LEVELS),
        _c("accidentType", "事故特征（危害后果）", 200, kind="enum", enum=ACCIDENT_TYPES, separator="、"),
        _c("measureContent", "管控措施", 2000),
        _c("measureType", "管控措施类别", 20, kind="enum", enum=MEASURE_TYPES),
        _c("dutyName", "责任单位", 200, required=True),
        _name("dutyMan", "责任人", 200, required=True, separator="，"),
    ),
        references=(Reference("riskNo", "06", "riskNo"),),
    ),
    Dataset("08", "risk_gallery", "A.10", "风险图库信息", "weekly", (
        _c("riskfileType", "风险图库类别", 20, required=True, kind="enum", enum=GALLERY_TYPES),
        _m("riskFile", "风险图库文件", required=True),
        _d("uploadDate", "上传日期", required=True),
        _name("publisher", "发布人"),
    )),
    Dataset("09", "hidden_danger", "A.11", "隐患排查治理信息", "daily", (
        _c("taskNo", "隐患编号", 50, required=True, kind="code"),
        _c("regNo", "设备代码", 20, kind="regno"),
        _c("troubleType", "隐患类别", 20, required=True, kind="enum", enum=TROUBLE_TYPES),
        _c("troubleLevel", "隐患级别", 20, required=True, kind="enum", enum=TROUBLE_LEVELS),
        _c("mainProblem", "隐患描述", 2000, required=True),
        _name("checkMan", "排查人", required=True),
        _d("checkDate", "排查日期", required=True),
        _d("limitDate", "限期整改日期"),
        _name("dealMan", "整改人"),
        _d("dealDate", "整改日期"),
        _c("dealInfo", "整改结果", 10, required=True, kind="enum", enum=DEAL_INFOS),
        _name("acceptMan", "验收人"),
        _d("acceptDate", "整改验收日期"),
        _c("acceptInfo", "整改验收结论", 20, kind="enum", enum=ACCEPT_INFOS,
           note="type N in the standard, text by decision"),
    ),
        date_orders=(DateOrder("checkDate", "limitDate"), DateOrder("checkDate", "dealDate"),
                     DateOrder("dealDate", "acceptDate")),
        required_when=(
            RequiredWhen("dealInfo", ("已整改",), ("dealMan", "dealDate")),
            RequiredWhen("acceptInfo", None, ("acceptMan", "acceptDate")),
        ),
    ),
)

BY_TX_CODE: dict[str, Dataset] = {d.tx_code: d for d in DATASETS}
TX_CODES: tuple[str, ...] = tuple(BY_TX_CODE)


def dataset(tx_code: str | int) -> Dataset:
    """The dataset of a txCode; accepts 6 or "6" for "06" since sources lose leading zeros."""
    code = str(tx_code).strip().zfill(2)
    try:
        return BY_TX_CODE[code]
    except KeyError:
        raise KeyError(f"unknown txCode {tx_code!r}: use one of {', '.join(TX_CODES)}") from None


def by_frequency(frequency: Frequency) -> tuple[str, ...]:
    """txCodes updated at this frequency (5.4)."""
    return tuple(d.tx_code for d in DATASETS if d.frequency == frequency)


def record_columns(ds: Dataset) -> tuple[str, ...]:
    """The columns of a target row: envelope, unit key, then the business fields."""
    cols = [f.name for f in ENVELOPE]
    if UNIT_KEY not in ds.field_names:
        cols.append(UNIT_KEY)
    cols.extend(ds.field_names)
    return tuple(cols)
