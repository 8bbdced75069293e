"""Two fictional using units' source databases, for `etl demo` and the tests.

`make_demo_sources(var_dir)` writes two SQLite files, each in its unit's OWN local schema:

* `demo_jinling_chem.sqlite`: 南京金陵精细化工有限公司, a chemical plant in 南京市江宁区 (boilers,
  pressure vessels). "EHS style": English snake_case tables, risk levels coded '1'..'4', yes/no
  as 'Y'/'N', dates as TEXT in mixed spellings, soft deletes (`del_flag`) and `modify_time` on
  the daily tables. Its unit row gives the city and district as NAMES.
* `demo_suzhou_lift.sqlite`: 苏州吴中电梯安装维保有限公司 (elevators, cranes in 苏州市吴中区 and
  姑苏区). "ERP style": pinyin abbreviations, levels as short words ('重大', '较大', '一般', '低'),
  flags as 1/0 or '是'/'否', ISO datetimes and some YYYYMMDD integers, `last_update` on every
  table, hard deletes, control levels with half-width parentheses. Its unit row gives codes.

Both contain deliberate dirt that real sources have; `PLANTED` lists it with the keys, so tests
can assert on it. Everything derives from `random.Random(SEED)` and fixed dates: two calls give
identical table contents on any machine, any day.

Attachments (the M fields, `etl.media.attachments`): unit A keeps its documents as files under
`var/demo_files/demo_jinling_chem/` (docx rules, jpg sign-in sheets, jpg/pdf/png risk images),
its tables naming them by relative path; unit B keeps them as BLOBs beside their names (`zd_gl.fjnr`,
`fxtk.wjnr`). One risk notice is the same PDF in both units (stored once).
"""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

from stdnum.cn import ric, uscc

from etl.onboarding import sample_files

SEED = 20241008

UNIT_A = "demo_jinling_chem"
UNIT_B = "demo_suzhou_lift"

COM_A = "南京金陵精细化工有限公司"
COM_B = "苏州吴中电梯安装维保有限公司"

_FULL = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def _fullwidth(s: str) -> str:
    return s.translate(_FULL)


def _org_code_check(base8: str) -> str:
    """GB 11714 organisation code check character (the 9th character)."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum((int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(base8, weights))
    c = 11 - total % 11
    return {10: "X", 11: "0"}.get(c, str(c))


def make_uscc(prefix8: str, org8: str) -> str:
    """A GB 32100 unified social credit code: registration prefix + org code + check."""
    body = prefix8 + org8 + _org_code_check(org8)
    number = body + uscc.calc_check_digit(body)
    assert uscc.is_valid(number), number
    return number


ORG_A = make_uscc("91320115", "MA1R7KX3")
ORG_B = make_uscc("91320506", "MA1W3L8P")

SURNAMES = "张王李刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭"
GIVEN = (
    "伟 芳 娜 秀英 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀兰 霞 平 刚 桂英 建华 志强 海燕 文彬 "
    "晓东 雪梅 国庆 建国 卫东 红梅 永刚 春华 立新 晓峰 玉兰 德明 宏伟 俊 凯 鹏 婷 倩 浩 宇 斌 昊 峰"
).split()

AREAS_A = ["320121", "320122", "320123", "320102", "320104", "320106", "320113", "320324",
           "320923", "320722", "340121"]
AREAS_B = ["320524", "320586", "320502", "320503", "320504", "320581", "320583", "340121",
           "410122", "320923"]


# ----------------------------------------------------------------------------- helpers

def _names(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN)
        if name not in out:
            out.append(name)
    return out


def _id_number(rng: random.Random, areas: list[str]) -> str:
    """A resident ID number valid by GB 11643 (check digit, birth date, birth place)."""
    while True:
        birth = date(1968, 1, 1) + timedelta(days=rng.randint(0, 365 * 32))
        body = rng.choice(areas) + birth.strftime("%Y%m%d") + f"{rng.randint(1, 999):03d}"
        number = body + ric.calc_check_digit(body + "0")
        if ric.is_valid(number):
            return number


def _wrong_check(number: str) -> str:
    good = number[-1]
    bad = "0" if good != "0" else "1"
    return number[:-1] + bad


def _day(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, (end - start).days))


def _ts(d: date, rng: random.Random) -> str:
    return datetime(d.year, d.month, d.day, rng.randint(8, 18), rng.randint(0, 59),
                    rng.randint(0, 59)).strftime("%Y-%m-%d %H:%M:%S")


def _spell_a(d: date, rng: random.Random) -> str:
    """Unit A keeps dates as TEXT in whatever spelling the clerk typed."""
    r = rng.random()
    if r < 0.5:
        return d.isoformat()
    if r < 0.7:
        return f"{d.year}/{d.month}/{d.day}"
    if r < 0.85:
        return d.strftime("%Y%m%d")
    return f"{d.year}年{d.month}月{d.day}日"


def _ymd_int(d: date) -> int:
    return int(d.strftime("%Y%m%d"))


def _regno(cat: str, district: str, year: int, seq: int) -> str:
    code = f"{cat}{district}{year}{seq:06d}"
    assert len(code) == 20, code
    return code


# Risk levels: index 0 = 重大 ... 3 = 低
A_LEVEL = ("1", "2", "3", "4")                      # unit A's local codes
B_LEVEL = ("重大", "较大", "一般", "低")              # unit B's short words
CTRL_A = ("公司（厂）级", "部门（装置、车间）级", "岗位（班组）级")
CTRL_B = ("公司(厂)级", "部门(装置、车间)级", "岗位(班组)级")

# Hazard checks per equipment family and accident type: (requirement, measure, measure type)
CHECKS: dict[str, dict[str, tuple[str, str, str]]] = {
    "锅炉": {
        "爆炸": ("安全阀、压力表、水位表是否在校验有效期内并灵敏可靠", "1：安全附件定期校验；2：超压、低水位联锁保护", "工程技术措施"),
        "泄漏": ("锅炉本体、管道、阀门有无泄漏，压力是否波动、存在异响", "1：SOP巡检、预防性维护保养、定检；2：应急预案、处置方案", "管理措施"),
        "爆燃": ("燃烧器点火程序、熄火保护是否正常", "1：点火前炉膛吹扫；2：熄火保护装置定期试验", "工程技术措施"),
        "损伤": ("受热面有无过热、鼓包、磨损", "1：定期检验；2：水质监测与排污", "管理措施"),
    },
    "容器": {
        "爆炸": ("安全阀、爆破片是否有效，压力、温度是否在允许范围内", "1：超压报警与联锁；2：安全附件定期校验", "工程技术措施"),
        "泄漏": ("法兰、接管、焊缝有无泄漏、腐蚀", "1：每班巡检；2：定期壁厚测定；3：泄漏应急处置方案", "管理措施"),
        "爆燃": ("可燃介质区域可燃气体报警器是否完好", "1：可燃气体检测报警；2：防爆电气", "工程技术措施"),
        "变形": ("容器本体有无变形、鼓包", "1：年度检查与定期检验；2：操作人员持证上岗", "管理措施"),
        "断裂": ("焊缝、支座有无裂纹", "1：定期无损检测；2：操作规程培训", "培训教育措施"),
        "损伤": ("保温层、防腐层是否完好", "1：定期维护保养", "管理措施"),
    },
    "电梯": {
        "坠落": ("层门门锁电气安全装置是否有效，层门是否能被随意打开", "1：每半月维保检查门锁；2：张贴安全警示标识", "工程技术措施"),
        "剪切": ("轿厢意外移动保护装置是否有效", "1：定期试验制动器与UCMP装置", "工程技术措施"),
        "挤压": ("门系统防夹保护装置（光幕）是否灵敏", "1：维保时测试光幕；2：乘梯须知告知", "管理措施"),
        "故障或者受困（滞留）": ("紧急报警装置是否能与值班室有效通话", "1：24小时值班；2：困人应急救援演练", "应急措施"),
        "碰撞": ("缓冲器、极限开关是否完好", "1：定期检查缓冲器油位与开关动作", "管理措施"),
    },
    "起重": {
        "坠落": ("起升高度限位器、钢丝绳及吊钩防脱装置是否完好", "1：班前检查；2：钢丝绳达到报废标准立即更换", "管理措施"),
        "碰撞": ("大小车行程限位、防撞装置是否有效", "1：设置行程限位与缓冲器", "工程技术措施"),
        "挤压": ("作业区域是否设置警戒，司索指挥是否到位", "1：作业人员佩戴安全帽；2：设置警戒区", "个体防护措施"),
        "倾覆": ("夹轨器、锚定装置是否有效，风速是否超限", "1：大风天气停止作业并锚定", "应急措施"),
        "断裂": ("主梁、吊具有无裂纹、变形", "1：定期检验；2：禁止超载起吊", "管理措施"),
        "失控": ("制动器是否可靠，控制回路是否正常", "1：每日试车检查制动器", "工程技术措施"),
    },
}
CHECK_OPR = ("作业人员是否持证上岗，是否严格执行操作规程", "1：持证上岗；2：岗前安全培训与技术交底", "培训教育措施")


def _family(name: str) -> str:
    for key, words in (("锅炉", ("锅炉", "分汽缸")), ("电梯", ("电梯", "扶梯")), ("起重", ("起重", "吊"))):
        if any(w in name for w in words):
            return key
    return "容器"


# --------------------------------------------------------------------------- unit A

def _unit_a(rng: random.Random) -> dict[str, tuple[list[tuple[str, str]], list[tuple]]]:
    T: dict[str, tuple[list[tuple[str, str]], list[tuple]]] = {}
    names = _names(rng, 26)
    deputy, chief, officer1, officer2 = names[0], names[1], names[2], names[3]

    # -- persons first (departments need managers) -------------------------------------
    depts = [  # id, code, name, parent_id, safety flag
        (1, "D00", "总经理办公室", None, "N"),
        (2, "D01", "安全环保部", 1, "Y"),
        (3, "D02", "设备部", 1, "N"),
        (4, "D03", "生产技术部", 1, "N"),
        (5, "D04", "生产一车间", 4, "N"),
        (6, "D05", "生产二车间", 4, "N"),
        (7, "D06", "动力车间", 3, "N"),
    ]
    # person index -> dept id, role
    person_dept = [1, 2, 2, 2, 3, 3, 7, 7, 7, 7, 7, 5, 5, 5, 5, 6, 6, 6, 6, 4, 4, 3, 7, 5, 6, 1]
    certs_by_dept = {7: ["G1", "G2", "G3"], 5: ["R1", "R2"], 6: ["R1", "R2"], 3: ["Q1", "N1", "R1"]}
    employees = []
    for i, name in enumerate(names):
        pid = i + 1
        dept_id = person_dept[i]
        idno = _id_number(rng, AREAS_A)
        chief_f = "Y" if pid == 2 else "N"
        officer_f = "Y" if pid in (3, 4) else "N"
        cert = ""
        if pid in (2, 3, 4):
            cert = "A"
        elif dept_id in certs_by_dept and rng.random() < 0.75:
            cert = rng.choice(certs_by_dept[dept_id])
        opr = "Y" if cert else "N"
        res = "Y" if (pid in (2, 3) or (dept_id in (3, 7) and rng.random() < 0.5)) else "N"
        if cert:
            auth = _day(rng, date(2022, 1, 4), date(2024, 12, 20))
            end = date(auth.year + 4, auth.month, auth.day) - timedelta(days=1)
            cert_no, auth_s, end_s, issuer = idno, _spell_a(auth, rng), _spell_a(end, rng), "南京市市场监督管理局"
        else:
            cert_no, auth_s, end_s, issuer = "", "", "", ""
        mobile = f"1{rng.choice('35789')}{rng.randint(0, 9)}{rng.randint(10000000, 99999999)}"
        gender = "男" if int(idno[16]) % 2 else "女"
        employees.append([pid, f"JL{pid:04d}", name, idno, dept_id, gender, mobile, chief_f, officer_f,
                          opr, res, cert, cert_no, auth_s, end_s, issuer])
    # dirt: invalid check digit (id 9), impossible birth date with a correct check digit (id 17)
    employees[8][3] = _wrong_check(employees[8][3])
    bad_birth = "320121" + "19880231" + "426"
    employees[16][3] = bad_birth + ric.calc_check_digit(bad_birth + "0")
    # dirt: full-width ID number (id 12), trailing space in a name (id 5)
    employees[11][3] = _fullwidth(employees[11][3])
    employees[4][2] = employees[4][2] + " "
    emp_rows = [tuple(e) for e in employees]
    emp_rows.insert(20, emp_rows[19])  # dirt: exact duplicate row of employee id 20
    T["t_employee"] = ([
        ("id", "INTEGER"), ("emp_no", "TEXT"), ("emp_name", "TEXT"), ("id_no", "TEXT"),
        ("dept_id", "INTEGER"), ("gender", "TEXT"), ("mobile", "TEXT"),
        ("safety_director", "TEXT"), ("safety_officer", "TEXT"), ("special_operator", "TEXT"),
        ("rescue_member", "TEXT"), ("cert_type", "TEXT"), ("cert_no", "TEXT"),
        ("cert_issue_date", "TEXT"), ("cert_valid_until", "TEXT"), ("cert_issuer", "TEXT"),
    ], emp_rows)

    managers = {1: deputy, 2: chief, 3: names[4], 4: names[19], 5: names[11], 6: names[15], 7: names[6]}
    tels = {1: "025-5216 8800", 2: "025-52168801", 3: "138 5170 2231", 4: "025-52168803",
            5: "13913857720", 6: "+86 139 1588 0462", 7: ""}   # dirt: spaces, +86, blank (id 7)
    T["t_department"] = ([
        ("id", "INTEGER"), ("dept_code", "TEXT"), ("dept_name", "TEXT"), ("parent_id", "INTEGER"),
        ("safety_dept", "TEXT"), ("manager", "TEXT"), ("manager_tel", "TEXT"), ("remark", "TEXT"),
    ], [(d[0], d[1], d[2], d[3], d[4], managers[d[0]], tels[d[0]], "") for d in depts])

    T["t_company"] = ([
        ("id", "INTEGER"), ("company_name", "TEXT"), ("credit_code", "TEXT"), ("legal_person", "TEXT"),
        ("city_name", "TEXT"), ("district_name", "TEXT"), ("reg_address", "TEXT"),
        ("contact_name", "TEXT"), ("contact_phone", "TEXT"), ("create_time", "TEXT"),
    ], [(1, COM_A, ORG_A, deputy, "江苏省南京市", "江宁区",
         "江苏省南京市江宁区滨江经济开发区丽水大街1188号", chief, "+86 139 5188 2046",
         "2023-03-15 09:30:00")])

    # -- rules, training, gallery --------------------------------------------------------
    rules = ["特种设备安全管理制度", "锅炉安全操作规程管理制度", "压力容器定期检验管理制度",
             "风险分级管控管理制度", "隐患排查治理管理制度"]
    rule_rows = []
    for i, title in enumerate(rules):
        d = date(2023, 3, 1) + timedelta(days=37 * i + rng.randint(0, 20))
        rule_rows.append((i + 1, f"JL-ZD-{2023 + i // 3}-{i + 1:03d}", title, f"制度/{title}.docx",
                          _spell_a(d, rng), rng.choice([chief, officer1]), f"V{1 + i % 2}.0"))
    T["t_rule_doc"] = ([
        ("id", "INTEGER"), ("doc_no", "TEXT"), ("doc_title", "TEXT"), ("file_name", "TEXT"),
        ("publish_date", "TEXT"), ("publisher", "TEXT"), ("version", "TEXT"),
    ], rule_rows)

    trainings = [
        ("2024年度特种设备安全培训计划", "锅炉司炉人员安全操作培训", "锅炉房会议室", "锅炉启停操作、安全附件检查与水质管理"),
        ("2024年度特种设备安全培训计划", "压力容器操作人员培训", "三楼会议室", "压力容器操作规程、超压泄漏应急处置"),
        ("2024年度应急演练计划", "液氨储罐泄漏应急演练", "罐区", "泄漏报警、人员疏散、堵漏与洗消"),
        ("2025年度特种设备安全培训计划", "特种设备安全管理人员研讨会", "三楼会议室", "风险分级管控与隐患排查治理要求"),
        ("2025年度特种设备安全培训计划", "起重吊装作业安全培训", "仓库", "起重机械检查、司索指挥信号与吊装作业规范"),
    ]
    tr_rows = []
    for i, (plan, title, place, content) in enumerate(trainings):
        year = 2024 if plan.startswith("2024") else 2025
        start, end = date(year, 1, 10), date(year, 12, 20)
        td = _day(rng, date(year, 3, 1), date(year, 6, 30))
        tr_rows.append((i + 1, f"{year}{i + 1:03d}", plan, _spell_a(start, rng), _spell_a(end, rng),
                        title, _spell_a(td, rng), place, content, f"培训\\{title}签到表.jpg"))
    T["t_training_plan"] = ([
        ("id", "INTEGER"), ("plan_code", "TEXT"), ("plan_name", "TEXT"), ("plan_begin", "TEXT"),
        ("plan_finish", "TEXT"), ("train_title", "TEXT"), ("train_date", "TEXT"),
        ("train_place", "TEXT"), ("train_content", "TEXT"), ("evidence_file", "TEXT"),
    ], tr_rows)

    T["t_risk_image"] = ([
        ("id", "INTEGER"), ("image_type", "TEXT"), ("file_path", "TEXT"), ("upload_date", "TEXT"),
        ("uploader", "TEXT"),
    ], [
        (1, "风险四色分布图", f"upload/risk/{COM_A}特种设备风险四色分布图.jpg", "2024-05-20", officer1),
        (2, "设备风险告知牌", "upload/risk/锅炉房设备风险告知牌.pdf", "2024/6/3", officer1),
        (3, "岗位风险告知卡", "upload/risk/司炉工岗位风险告知卡.png", "2024年6月3日", officer2),
    ])

    # -- risk points -----------------------------------------------------------------------
    equipment = [  # category, name, area, accidents, inherent level idx, remain level idx, year
        ("1100", "电站锅炉", "动力车间锅炉房", ["爆炸", "泄漏"], 1, 3, 2018),
        ("1100", "蒸汽锅炉", "动力车间锅炉房", ["爆炸", "泄漏", "损伤"], 1, 3, 2019),
        ("1300", "有机热载体锅炉", "导热油炉房", ["爆炸", "泄漏", "爆燃"], 1, 2, 2020),
        ("2130", "氯乙烯聚合反应釜", "生产一车间", ["爆炸", "泄漏"], 0, 2, 2017),
        ("2150", "甲醇储罐", "罐区", ["泄漏", "爆炸"], 1, 2, 2016),
        ("2150", "液氨储罐", "罐区", ["泄漏", "爆炸"], 0, 2, 2016),
        ("2170", "压缩空气储罐", "空压站", ["爆炸"], 2, 3, 2021),
        ("2150", "列管式换热器", "生产二车间", ["泄漏", "损伤"], 2, 3, 2019),
        ("2150", "汽液分离器", "生产一车间", ["泄漏", "断裂"], 2, 3, 2020),
        ("2130", "蒸压釜", "生产二车间", ["爆炸", "泄漏"], 1, 2, 2018),
        ("2170", "氮气缓冲罐", "公用工程区", ["爆炸", "变形"], 2, 3, 2022),
        ("2150", "精馏塔", "生产一车间", ["泄漏", "爆炸"], 1, 2, 2017),
        ("2150", "分汽缸", "动力车间锅炉房", ["泄漏", "爆炸"], 2, 3, 2019),
        ("2130", "加氢反应釜", "生产二车间", ["爆炸", "泄漏", "爆燃"], 0, 2, 2021),
        ("4110", "桥式起重机", "成品仓库", ["坠落", "碰撞", "挤压"], 2, 3, 2015),
        ("3120", "曳引式载货电梯", "成品仓库", ["坠落", "剪切", "挤压", "故障或者受困（滞留）"], 2, 3, 2020),
    ]
    operations = [
        ("锅炉点火及运行操作", "动力车间锅炉房", ["爆燃", "爆炸"], 1, 3),
        ("压力容器投用与停用操作", "生产一车间", ["泄漏", "爆炸"], 1, 2),
        ("压力容器检修动火作业", "生产二车间", ["爆燃", "爆炸"], 1, 2),
        ("储罐充装卸料作业", "罐区", ["泄漏"], 1, 3),
        ("起重吊装作业", "成品仓库", ["坠落", "碰撞"], 2, 3),
        ("锅炉水处理作业", "动力车间锅炉房", ["损伤"], 3, 3),
    ]
    area_dept = {"动力车间锅炉房": "动力车间", "导热油炉房": "动力车间", "生产一车间": "生产一车间",
                 "生产二车间": "生产二车间", "罐区": "生产技术部", "空压站": "设备部",
                 "公用工程区": "设备部", "成品仓库": "设备部"}
    dept_people = {d[2]: [e[2].strip() for e in employees if e[4] == d[0]] for d in depts}
    points = []  # dicts, the truth used by hazards and hidden dangers
    for i, (cat, name, area, acc, lvl0, lvl1, year) in enumerate(equipment):
        points.append(dict(id=i + 1, no=f"FX2024{i + 1:08d}", reg=_regno(cat, "320115", year, 10 + i),
                           name=name, kind="设备", area=area, acc=acc, l0=lvl0, l1=lvl1))
    for j, (name, area, acc, lvl0, lvl1) in enumerate(operations):
        i = len(equipment) + j
        points.append(dict(id=i + 1, no=f"FX2024{i + 1:08d}", reg="", name=name, kind="作业",
                           area=area, acc=acc, l0=lvl0, l1=lvl1))
    rp_rows = []
    for p in points:
        reg_d = _day(rng, date(2024, 3, 1), date(2024, 9, 30))
        chk_d = reg_d + timedelta(days=rng.randint(1, 10))
        dept = area_dept[p["area"]]
        people = dept_people[dept]
        duty_unit = dept if rng.random() < 0.4 else ""   # blank: the unit itself (mapping default)
        ctrl = CTRL_A[0] if p["l0"] <= 1 else CTRL_A[1] if p["l0"] == 2 else CTRL_A[2]
        rp_rows.append([p["id"], p["no"], p["reg"], p["name"], p["kind"], _spell_a(reg_d, rng),
                        "、".join(p["acc"]), p["area"], A_LEVEL[p["l0"]], A_LEVEL[p["l1"]], ctrl,
                        duty_unit, rng.choice(people), chief, _spell_a(chk_d, rng), 0,
                        _ts(chk_d + timedelta(days=rng.randint(0, 30)), rng)])
    # dirt on risk points
    rp_rows[3][2] = _fullwidth(rp_rows[3][2])          # id 4: full-width equipment code
    rp_rows[1][3] = rp_rows[1][3] + " "                 # id 2: trailing space in the name
    rp_rows[0][6] = "爆炸,泄漏"                          # id 1: ASCII comma
    rp_rows[6][6] = "爆炸,泄漏"                          # id 7
    rp_rows[2][6] = "爆炸/泄漏"                          # id 3: slash
    rp_rows[4][12] = "、".join(dept_people["生产技术部"][:2])   # id 5: dutyMan with 、
    rp_rows[5][12] = ",".join(dept_people["生产技术部"][:2])    # id 6: dutyMan with ASCII comma
    rp_rows[9][13] = "  "                               # id 10: blank reviewer
    rp_rows[20][15] = 1                                 # id 21: soft-deleted
    rp_rows[20][16] = "2025-03-18 10:12:45"
    rp_rows = [tuple(r) for r in rp_rows]
    rp_rows.insert(8, rp_rows[7])                       # dirt: exact duplicate of risk point id 8
    T["t_risk_point"] = ([
        ("id", "INTEGER"), ("point_no", "TEXT"), ("equip_code", "TEXT"), ("point_name", "TEXT"),
        ("kind", "TEXT"), ("reg_date", "TEXT"), ("accident_type", "TEXT"), ("area", "TEXT"),
        ("init_level", "TEXT"), ("residual_level", "TEXT"), ("control_level", "TEXT"),
        ("duty_unit", "TEXT"), ("duty_person", "TEXT"), ("reviewer", "TEXT"), ("review_date", "TEXT"),
        ("del_flag", "INTEGER"), ("modify_time", "TEXT"),
    ], rp_rows)

    # -- hazard sources: two per risk point + one orphan -------------------------------------
    hz_rows = []
    hid = 0
    for p in points:
        fam = _family(p["name"])
        accs = (p["acc"] * 2)[:2] if len(p["acc"]) == 1 else p["acc"][:2]
        for k, acc in enumerate(accs):
            hid += 1
            if p["kind"] == "作业" and k == 1 or len(p["acc"]) == 1 and k == 1:
                req, measure, mtype = CHECK_OPR
                item = f"{p['name'].strip()}人员操作"
            else:
                req, measure, mtype = CHECKS[fam].get(acc, CHECK_OPR)
                item = f"{p['name'].strip()}{acc}"
            d = date(2024, 10, 1) + timedelta(days=rng.randint(0, 90))
            lvl0 = max(p["l0"], min(3, p["l0"] + k))
            lvl1 = max(lvl0, p["l1"])
            ctrl = CTRL_A[0] if lvl0 <= 1 else CTRL_A[1] if lvl0 == 2 else CTRL_A[2]
            people = dept_people[area_dept[p["area"]]]
            hz_rows.append([hid, f"WX{d.strftime('%y%m%d')}{rng.randint(80000, 175959):06d}{hid:04d}",
                            p["no"], item, req, A_LEVEL[lvl0], A_LEVEL[lvl1], ctrl, acc, measure, mtype,
                            "", rng.choice(people), 0, _ts(d, rng)])
    hid += 1
    hz_rows.append([hid, f"WX241230{rng.randint(80000, 175959):06d}{hid:04d}", "FX202400000099",
                    "废热锅炉泄漏", CHECKS["锅炉"]["泄漏"][0], "2", "3", CTRL_A[0], "泄漏",
                    CHECKS["锅炉"]["泄漏"][1], "管理措施", "", chief, 0, "2024-12-30 15:20:11"])
    hz_rows[5][10] = "  "                               # id 6: blank measure type
    hz_rows[11][8] = "爆炸/泄漏"                         # id 12: slash
    hz_rows[16][12] = "、".join(dept_people["生产一车间"][:2])  # id 17: dutyMan with 、
    hz_rows[17][12] = ",".join(dept_people["生产一车间"][1:3])  # id 18: dutyMan with ASCII comma
    hz_rows[18][11] = "生产二车间 "                      # id 19: duty unit with a trailing space
    hz_rows[29][13] = 1                                 # id 30: soft-deleted
    hz_rows[29][14] = "2025-02-11 09:05:37"
    hz_rows = [tuple(r) for r in hz_rows]
    hz_rows.insert(13, hz_rows[12])                     # dirt: exact duplicate of hazard id 13
    T["t_hazard"] = ([
        ("id", "INTEGER"), ("hazard_no", "TEXT"), ("point_no", "TEXT"), ("check_item", "TEXT"),
        ("check_req", "TEXT"), ("init_level", "TEXT"), ("residual_level", "TEXT"),
        ("control_level", "TEXT"), ("accident_type", "TEXT"), ("measures", "TEXT"),
        ("measure_type", "TEXT"), ("duty_unit", "TEXT"), ("duty_person", "TEXT"),
        ("del_flag", "INTEGER"), ("modify_time", "TEXT"),
    ], hz_rows)

    # -- hidden dangers --------------------------------------------------------------------
    problems = [
        ("设备类", "锅炉", "锅炉安全阀校验超期"), ("设备类", "锅炉", "压力表表盘模糊、未标红线"),
        ("设备类", "容器", "反应釜法兰处轻微泄漏"), ("设备类", "容器", "储罐液位计指示不清"),
        ("设备类", "锅炉", "分汽缸保温层破损"), ("设备类", "起重", "起重机吊钩防脱钩装置失效"),
        ("设备类", "电梯", "电梯层门门锁触点氧化"), ("设备类", "容器", "压力容器铭牌缺失"),
        ("设备类", "容器", "安全阀铅封缺失"), ("设备类", "容器", "换热器接管处腐蚀"),
        ("管理类", None, "安全技术档案不全"), ("管理类", None, "特种设备定期检验报告未归档"),
        ("管理类", None, "应急预案未按期演练"), ("管理类", "容器", "使用登记证未悬挂于显著位置"),
        ("管理类", None, "日常巡检记录填写不完整"),
        ("作业过程（人员）类", "锅炉", "司炉工未持证上岗"), ("作业过程（人员）类", None, "作业人员未按规定佩戴防护用品"),
        ("作业过程（人员）类", "锅炉", "交接班记录缺失"), ("作业过程(人员)类", "容器", "充装作业未执行双人确认"),
        ("环境类", "锅炉", "锅炉房通道堆放杂物"), ("环境类", None, "罐区防火堤内积水"),
        ("环境类", "起重", "起重机作业区域未设置警戒线"), ("环境类", "锅炉", "锅炉房照明不足"),
    ]
    eq_points = [p for p in points if p["kind"] == "设备"]
    inspectors = [chief, officer1, officer2] + dept_people["设备部"]
    fixers = dept_people["动力车间"] + dept_people["设备部"] + dept_people["生产一车间"]
    hd_rows = []
    for i in range(50):
        hid = i + 1
        ttype, fam, problem = problems[(i * 7 + rng.randint(0, 3)) % len(problems)]
        reg = ""
        if fam is not None:
            cands = [p for p in eq_points if _family(p["name"]) == fam] or eq_points
            reg = rng.choice(cands)["reg"]
        level = "一般事故隐患" if rng.random() < 0.8 else "较大事故隐患" if rng.random() < 0.85 else "严重事故隐患"
        chk = _day(rng, date(2024, 1, 8), date(2025, 6, 20))
        limit = chk + timedelta(days=rng.choice([7, 15, 30]))
        tstamp = datetime(chk.year, chk.month, chk.day, rng.randint(8, 17), rng.randint(0, 59), rng.randint(0, 59))
        no = f"YH{tstamp.strftime('%Y%m%d%H%M%S')}{hid:06d}"
        done = rng.random() < 0.7
        row = [hid, no, reg, ttype, level, problem, rng.choice(inspectors), _spell_a(chk, rng),
               _spell_a(limit, rng), "", "", "0", "", "", "", 0, _ts(chk, rng)]
        if done:
            deal = chk + timedelta(days=rng.randint(1, (limit - chk).days))
            acc = deal + timedelta(days=rng.randint(1, 5))
            ok = rng.random() < 0.9
            row[9:15] = [rng.choice(fixers), _spell_a(deal, rng), "1", rng.choice([chief, officer1]),
                         _spell_a(acc, rng), "1" if ok else "0"]
            row[16] = _ts(acc, rng)
        hd_rows.append(row)
    # id 15: rectified BEFORE it was found (dealDate < checkDate)
    r = hd_rows[14]
    r[1], r[7], r[8] = "YH20240910143512000015", "2024-09-10", "2024-09-25"
    r[9:15] = [fixers[0], "2024-09-05", "1", chief, "2024-09-12", "1"]
    r[16] = "2024-09-12 16:40:00"
    # id 23: impossible check date
    r = hd_rows[22]
    r[1], r[7], r[8] = "YH20240230101530000023", "2024-02-30", "2024-03-15"
    r[9:15] = ["", "", "0", "", "", ""]
    r[16] = "2024-02-28 10:21:09"
    # id 31: open in the old version, rectified in the newer one (newer stored FIRST)
    r = hd_rows[30]
    r[3], r[5], r[6] = "设备类", "安全阀铅封缺失", officer1
    r[2] = points[4]["reg"]
    r[1], r[7], r[8] = "YH20250402091500000031", "2025-04-02", "2025-04-17"
    r[9:15] = ["", "", "0", "", "", ""]
    r[16] = "2025-04-02 09:15:00"
    newer = list(r)
    newer[9:15] = [fixers[1], "2025-04-10", "1", chief, "2025/4/12", "1"]
    newer[16] = "2025-04-12 14:30:00"
    hd_rows[46][15] = 1                                 # id 47: soft-deleted
    hd_rows[46][16] = "2025-06-25 11:00:00"
    hd_rows = [tuple(x) for x in hd_rows]
    hd_rows.insert(30, tuple(newer))                    # newer version of id 31 before the older
    hd_rows.insert(41, hd_rows[40])                     # exact duplicate of hidden danger id 40
    T["t_hidden_danger"] = ([
        ("id", "INTEGER"), ("hd_no", "TEXT"), ("equip_code", "TEXT"), ("hd_type", "TEXT"),
        ("hd_level", "TEXT"), ("description", "TEXT"), ("finder", "TEXT"), ("find_date", "TEXT"),
        ("deadline", "TEXT"), ("rectifier", "TEXT"), ("rectify_date", "TEXT"),
        ("rectify_status", "TEXT"), ("acceptor", "TEXT"), ("accept_date", "TEXT"),
        ("accept_result", "TEXT"), ("del_flag", "INTEGER"), ("modify_time", "TEXT"),
    ], hd_rows)
    return T


# --------------------------------------------------------------------------- unit B

def _unit_b(rng: random.Random) -> dict[str, tuple[list[tuple[str, str]], list[tuple]]]:
    T: dict[str, tuple[list[tuple[str, str]], list[tuple]]] = {}
    names = _names(rng, 30)
    deputy, chief, officer1, officer2 = names[0], names[1], names[2], names[3]

    depts = [  # code, name, parent name, safety flag
        ("BM01", "总经理室", "", 0),
        ("BM02", "安全质量部", "总经理室", 1),
        ("BM03", "维保一部", "总经理室", 0),
        ("BM04", "维保二部", "总经理室", 0),
        ("BM05", "安装工程部", "总经理室", 0),
        ("BM06", "起重设备部", "总经理室", 0),
        ("BM07", "综合办公室", "总经理室", 0),
    ]
    person_dept = ["总经理室", "安全质量部", "安全质量部", "安全质量部"] + \
        ["维保一部"] * 7 + ["维保二部"] * 7 + ["安装工程部"] * 4 + ["起重设备部"] * 5 + ["综合办公室"] * 3
    cert_kind = {"维保一部": ["电梯作业"], "维保二部": ["电梯作业"], "安装工程部": ["电梯作业", "起重机作业"],
                 "起重设备部": ["起重机作业", "场(厂)内专用机动车辆作业"]}
    people = []
    for i, name in enumerate(names):
        rid = f"RY{i + 1:04d}"
        dept = person_dept[i]
        idno = _id_number(rng, AREAS_B)
        kind = ""
        if i in (1, 2, 3):
            kind = "特种设备安全管理"
        elif dept in cert_kind and rng.random() < 0.85:
            kind = rng.choice(cert_kind[dept])
        if kind:
            auth = _day(rng, date(2022, 1, 4), date(2024, 12, 20))
            end = date(auth.year + 4, auth.month, auth.day) - timedelta(days=1)
            cert = [kind, idno, auth.isoformat(), end.isoformat(), "苏州市市场监督管理局"]
        else:
            cert = ["", "", None, None, ""]
        res = 1 if (i in (1, 2) or (dept in ("维保一部", "维保二部") and rng.random() < 0.6)) else 0
        phone = f"1{rng.choice('35789')}{rng.randint(0, 9)}{rng.randint(10000000, 99999999)}"
        people.append([rid, name, idno, dept, "是" if i == 1 else "否", "是" if i in (2, 3) else "否",
                       1 if kind else 0, res, *cert, phone,
                       _ts(date(2024, 12, 1) + timedelta(days=rng.randint(0, 120)), rng)])
    people[2][2] = people[2][9] = "320214199003076516"  # RY0003: 新吴区 (code of 2015), born 1990: valid
    people[6][2] = _wrong_check(people[6][2])           # RY0007: wrong check digit
    people[21][2] = people[21][2][:17]                  # RY0022: 17 characters
    people[9][2] = _fullwidth(people[9][2])             # RY0010: full-width (valid)
    people[14][2] = people[14][2] + " "                 # RY0015: trailing space (valid)
    people[4][3] = "维保一部 "                           # RY0005: department with a trailing space
    people[12][1] = " " + people[12][1]                 # RY0013: leading space in the name
    rows = [tuple(p) for p in people]
    rows.insert(18, rows[17])                           # exact duplicate of RY0018
    T["ry_xx"] = ([
        ("rybh", "TEXT"), ("xm", "TEXT"), ("sfzhm", "TEXT"), ("ssbm", "TEXT"), ("sfaqzj", "TEXT"),
        ("sfaqy", "TEXT"), ("sftzsbzyry", "INTEGER"), ("sfyjjyry", "INTEGER"), ("zslb", "TEXT"),
        ("zsbh", "TEXT"), ("pzrq", "DATE"), ("yxrq", "DATE"), ("fzbm", "TEXT"), ("sjhm", "TEXT"),
        ("last_update", "DATETIME"),
    ], rows)

    by_dept = {d[1]: [p[1].strip() for p in people if p[3].strip() == d[1]] for d in depts}
    tels = {"BM01": "0512-6528 3300", "BM02": "+8613962118870", "BM03": "139 1355 2087",
            "BM04": "  ", "BM05": "0512-65283305-8001", "BM06": "65283306", "BM07": ""}
    T["bm_xx"] = ([
        ("bmbh", "TEXT"), ("bmmc", "TEXT"), ("sjbmmc", "TEXT"), ("sfaqglbm", "INTEGER"),
        ("lxr", "TEXT"), ("lxdh", "TEXT"), ("last_update", "DATETIME"),
    ], [(d[0], d[1], d[2], d[3], by_dept[d[1]][0], tels[d[0]], "2024-11-20 10:00:00") for d in depts])

    T["dw_jbxx"] = ([
        ("dwbh", "TEXT"), ("dwmc", "TEXT"), ("tyshxydm", "TEXT"), ("fddbr", "TEXT"), ("dsdm", "TEXT"),
        ("qxdm", "TEXT"), ("lxdz", "TEXT"), ("lxr", "TEXT"), ("lxdh", "TEXT"), ("last_update", "DATETIME"),
    ], [("DW001", COM_B + " ", ORG_B, deputy, "320500", "320506",
         "江苏省苏州市吴中区木渎镇金枫南路1258号", chief, "0512 6528 3301", "2024-11-20 10:00:00")])

    rules = ["电梯维护保养管理制度", "起重机械安全管理制度", "电梯应急救援管理制度", "特种设备作业人员管理制度"]
    T["zd_gl"] = ([
        ("zdbh", "TEXT"), ("zdmc", "TEXT"), ("fjmc", "TEXT"), ("scsj", "DATETIME"), ("fbr", "TEXT"),
        ("last_update", "DATETIME"), ("fjnr", "BLOB"),
    ], [(f"ZD{i + 1:03d}", t, f"{t}.docx", _ts(date(2023, 6, 1) + timedelta(days=45 * i), rng),
         chief, "2024-11-20 10:00:00", sample_files.docx_bytes(f"{COM_B} {t}"))
        for i, t in enumerate(rules)])

    plans = [("PX2024-01", "2024年度电梯维保人员培训计划", date(2024, 1, 5), date(2024, 12, 25)),
             ("PX2024-02", "2024年度起重机械安全培训计划", date(2024, 2, 1), date(2024, 11, 30)),
             ("PX2025-01", "2025年度特种设备安全培训计划", date(2025, 1, 6), date(2025, 12, 26))]
    T["px_jh"] = ([
        ("jhbh", "TEXT"), ("jhmc", "TEXT"), ("jhksrq", "DATE"), ("jhjsrq", "DATE"), ("last_update", "DATETIME"),
    ], [(p[0], p[1], p[2].isoformat(), p[3].isoformat(), "2024-11-20 10:00:00") for p in plans])
    records = [
        ("PX2024-01", "电梯困人应急救援演练", "吴中区金枫南路小区3号楼", "困人报警响应、盘车放人操作与安抚"),
        ("PX2024-01", "电梯维保规范培训", "公司培训室", "TSG T5002 维护保养项目与记录要求"),
        ("PX2024-02", "桥式起重机司机培训", "起重设备部车间", "起重机安全操作规程、指挥信号"),
        ("PX2025-01", "特种设备安全管理人员研讨会", "公司培训室", "风险分级管控与隐患排查治理"),
        ("PX2025-01", "自动扶梯安全培训", "姑苏区观前街商场", "扶梯梳齿板、扶手带检查及急停操作"),
    ]
    jl = []
    for i, (plan, title, place, content) in enumerate(records):
        p = next(x for x in plans if x[0] == plan)
        d = _day(rng, p[2] + timedelta(days=30), p[3] - timedelta(days=30))
        jl.append((f"PXJL{i + 1:04d}", plan, title, _ymd_int(d), place, content, f"{title}活动.jpg",
                   _ts(d + timedelta(days=1), rng)))
    T["px_jl"] = ([
        ("jlbh", "TEXT"), ("jhbh", "TEXT"), ("pxbt", "TEXT"), ("pxrq", "INTEGER"), ("pxdd", "TEXT"),
        ("pxnr", "TEXT"), ("pxfj", "TEXT"), ("last_update", "DATETIME"),
    ], jl)

    T["fxtk"] = ([
        ("tkbh", "TEXT"), ("tklb", "TEXT"), ("wjmc", "TEXT"), ("scrq", "DATE"), ("scr", "TEXT"),
        ("last_update", "DATETIME"), ("wjnr", "BLOB"),
    ], [
        ("TK001", "01", f"{COM_B}特种设备风险四色分布图.jpg", "2024-06-18", officer1, "2024-06-18 09:00:00",
         _jpeg(f"{COM_B} risk map")),
        ("TK002", "02", "曳引式电梯设备风险告知牌.pdf", "2024-06-18", officer1, "2024-06-18 09:05:00",
         SHARED_NOTICE),  # the province's template: the same bytes as unit A's, stored once
        ("TK003", "03", "起重机司机岗位风险告知卡.png", "2024-07-02", officer2, "2024-07-02 14:20:00",
         sample_files.png_bytes(4, 3, (30, 90, 200))),
        ("TK004", "99", "维保作业安全提示海报.jpg", "2024-08-15", officer2, "2024-08-15 16:45:00",
         _jpeg("poster")),
    ])

    # -- risk points ------------------------------------------------------------------------
    sites = [("320506", "吴中区木渎镇金枫南路小区{}号楼"), ("320506", "吴中区长桥街道宝带西路{}号商务楼"),
             ("320508", "姑苏区观前街{}号商场"), ("320506", "吴中经济开发区旺山工业园{}号厂房")]
    equipment = [  # cat, name, site idx, accidents, l0, l1, year
        ("3110", "曳引式乘客电梯", 0, ["坠落", "剪切", "挤压", "故障或者受困（滞留）"], 1, 3, 2015),
        ("3110", "曳引式乘客电梯", 0, ["坠落", "故障或者受困（滞留）"], 1, 3, 2016),
        ("3110", "曳引式乘客电梯", 1, ["坠落", "剪切", "挤压"], 1, 3, 2018),
        ("3110", "曳引式乘客电梯", 1, ["故障或者受困（滞留）", "挤压"], 2, 3, 2019),
        ("3110", "无机房乘客电梯", 2, ["坠落", "剪切"], 1, 2, 2020),
        ("3110", "曳引式乘客电梯", 2, ["坠落", "挤压"], 1, 3, 2021),
        ("3120", "曳引式载货电梯", 3, ["坠落", "剪切", "碰撞"], 1, 2, 2017),
        ("3120", "曳引式载货电梯", 3, ["坠落", "碰撞"], 2, 3, 2022),
        ("3310", "自动扶梯", 2, ["挤压", "坠落"], 1, 2, 2019),
        ("3310", "自动扶梯", 2, ["挤压", "剪切"], 1, 2, 2019),
        ("4110", "桥式起重机", 3, ["坠落", "碰撞", "挤压"], 1, 2, 2016),
        ("4110", "电动单梁桥式起重机", 3, ["坠落", "碰撞"], 2, 3, 2020),
        ("4210", "门式起重机", 3, ["倾覆", "坠落", "碰撞"], 0, 2, 2014),
        ("4110", "电动葫芦桥式起重机", 3, ["坠落", "断裂"], 2, 3, 2021),
        ("3110", "曳引式乘客电梯", 1, ["坠落", "故障或者受困（滞留）"], 1, 3, 2023),
    ]
    operations = [
        ("电梯维护保养作业", 0, ["坠落", "剪切", "挤压"], 1, 2),
        ("电梯困人救援作业", 1, ["坠落", "挤压"], 1, 2),
        ("电梯安装作业", 1, ["坠落", "碰撞"], 0, 2),
        ("起重吊装作业", 3, ["坠落", "碰撞", "倾覆"], 1, 2),
        ("起重机检修作业", 3, ["坠落", "挤压"], 2, 3),
    ]
    site_dept = {0: "维保一部", 1: "维保二部", 2: "维保二部", 3: "起重设备部"}
    points = []
    for i, (cat, name, s, acc, l0, l1, year) in enumerate(equipment):
        district, addr = sites[s]
        points.append(dict(no=f"FXD-2023-{i + 1:04d}", reg=_regno(cat, district, year, 100 + i * 7),
                           name=name, kind="SB", site=s, addr=addr.format(rng.randint(1, 12)), acc=acc,
                           l0=l0, l1=l1))
    for j, (name, s, acc, l0, l1) in enumerate(operations):
        i = len(equipment) + j
        points.append(dict(no=f"FXD-2023-{i + 1:04d}", reg=None, name=name, kind="ZY", site=s,
                           addr=sites[s][1].format(rng.randint(1, 12)), acc=acc, l0=l0, l1=l1))
    rp = []
    for p in points:
        reg_d = _day(rng, date(2023, 9, 1), date(2024, 6, 30))
        chk_d = reg_d + timedelta(days=rng.randint(1, 7))
        ctrl = CTRL_B[0] if p["l0"] <= 1 else CTRL_B[1] if p["l0"] == 2 else CTRL_B[2]
        dept = site_dept[p["site"]]
        rp.append([p["no"], p["reg"], p["name"], p["kind"], reg_d.isoformat(), "、".join(p["acc"]),
                   p["addr"], B_LEVEL[p["l0"]], B_LEVEL[p["l1"]], ctrl, COM_B if rng.random() < 0.5 else dept,
                   rng.choice(by_dept[dept]), chief, _ymd_int(chk_d),
                   _ts(chk_d + timedelta(days=rng.randint(0, 200)), rng)])
    rp[0][5] = "坠落/剪切/挤压/故障或者受困(滞留)"   # FXD-2023-0001: slashes + half-width parentheses
    rp[2][5] = "坠落,剪切,挤压"                      # FXD-2023-0003: ASCII commas
    rp[10][11] = ",".join(by_dept["起重设备部"][:2])   # FXD-2023-0011: dutyMan with ASCII comma
    rp[12][11] = "、".join(by_dept["起重设备部"][1:3])  # FXD-2023-0013: dutyMan with 、
    rp[7][2] = rp[7][2] + "  "                       # FXD-2023-0008: trailing spaces
    rp[8][12] = ""                                   # FXD-2023-0009: blank reviewer
    # FXD-2023-0006: an older version, then a newer one (remaining level lowered); newer stored first
    old = list(rp[5])
    old[8], old[14] = "一般", "2024-03-02 09:00:00"
    rp[5][8], rp[5][14] = "低", "2025-01-15 16:20:00"
    rows = [tuple(r) for r in rp]
    rows.insert(6, tuple(old))
    T["fxd_xx"] = ([
        ("fxdbh", "TEXT"), ("sbdm", "TEXT"), ("fxdmc", "TEXT"), ("fxdlx", "TEXT"), ("djrq", "DATE"),
        ("sgtz", "TEXT"), ("qywz", "TEXT"), ("gyfxdj", "TEXT"), ("syfxdj", "TEXT"), ("gkcj", "TEXT"),
        ("zrdw", "TEXT"), ("zrr", "TEXT"), ("shr", "TEXT"), ("shrq", "INTEGER"), ("last_update", "DATETIME"),
    ], rows)

    # -- hazard sources ----------------------------------------------------------------------
    hz = []
    n = 0
    for p in points:
        fam = _family(p["name"])
        for k, acc in enumerate(p["acc"][:2]):
            n += 1
            if p["kind"] == "ZY" and k == 1:
                req, measure, mtype = CHECK_OPR
                item = f"{p['name']}人员操作"
            else:
                req, measure, mtype = CHECKS[fam].get(acc, CHECK_OPR)
                item = f"{p['name']}{acc.replace('故障或者受困（滞留）', '困人')}"
            l0 = max(p["l0"], min(3, p["l0"] + k))
            l1 = max(l0, p["l1"])
            ctrl = CTRL_B[0] if l0 <= 1 else CTRL_B[1] if l0 == 2 else CTRL_B[2]
            dept = site_dept[p["site"]]
            d = date(2024, 7, 1) + timedelta(days=rng.randint(0, 150))
            hz.append([f"WXY{n:05d}", p["no"], item, req, B_LEVEL[l0], B_LEVEL[l1], ctrl,
                       acc.replace("（", "(").replace("）", ")"), measure, mtype, dept,
                       rng.choice(by_dept[dept]), _ts(d, rng)])
    n += 1
    hz.append([f"WXY{n:05d}", "FXD-2023-0099", "液压电梯漏油", "油缸、油管有无渗漏", "一般", "低", CTRL_B[1],
               "泄漏", "1：定期检查液压系统", "管理措施", "维保二部", by_dept["维保二部"][0],
               "2024-12-01 10:00:00"])
    hz[3][7] = "故障或者受困(滞留)/挤压"              # WXY00004: slash
    hz[8][11] = ",".join(by_dept["维保二部"][:2])       # WXY00009: dutyMan with ASCII comma
    hz[9][11] = "、".join(by_dept["维保二部"][1:3])     # WXY00010: dutyMan with 、
    hz[14][10] = ""                                    # WXY00015: blank duty unit
    hz[20][9] = "  "                                   # WXY00021: blank measure type
    rows = [tuple(r) for r in hz]
    rows.insert(25, rows[24])                          # exact duplicate of WXY00025
    T["wxy_xx"] = ([
        ("wxybh", "TEXT"), ("fxdbh", "TEXT"), ("jcxm", "TEXT"), ("jcyq", "TEXT"), ("gyfxdj", "TEXT"),
        ("syfxdj", "TEXT"), ("gkcj", "TEXT"), ("sgtz", "TEXT"), ("gkcs", "TEXT"), ("csfl", "TEXT"),
        ("zrdw", "TEXT"), ("zrr", "TEXT"), ("last_update", "DATETIME"),
    ], rows)

    # -- hidden dangers -------------------------------------------------------------------
    problems = [
        ("SB", "电梯", "曳引钢丝绳断丝超标"), ("SB", "电梯", "层门门锁触点接触不良"),
        ("SB", "电梯", "轿厢应急照明失效"), ("SB", "电梯", "限速器校验超期"),
        ("SB", "起重", "桥式起重机制动器磨损超标"), ("SB", "起重", "门式起重机夹轨器失效"),
        ("SB", "电梯", "自动扶梯梳齿板断齿"), ("SB", "电梯", "电梯五方通话不畅"),
        ("SB", "起重", "起重机钢丝绳润滑不良"), ("SB", "电梯", "缓冲器油位不足"),
        ("GL", "电梯", "维保记录未及时签字确认"), ("GL", "电梯", "电梯使用标志过期未更换"),
        ("GL", None, "起重机械定期检验报告未归档"), ("GL", None, "应急救援演练记录缺失"),
        ("GL", None, "安全管理人员未配备到位"),
        ("ZY", None, "维保人员未持证上岗"), ("ZY", "起重", "吊装作业无专人指挥"), ("ZY", "电梯", "轿顶作业未设置检修运行"),
        ("HJ", "电梯", "机房通风不良、温度过高"), ("HJ", "电梯", "底坑积水"),
        ("HJ", "起重", "起重机轨道旁堆放物料"), ("HJ", "电梯", "机房门未上锁"),
    ]
    eq_points = [p for p in points if p["kind"] == "SB"]
    checkers = [chief, officer1, officer2] + by_dept["维保一部"][:3]
    fixers = by_dept["维保一部"] + by_dept["维保二部"] + by_dept["起重设备部"]
    yh = []
    for i in range(46):
        ttype, fam, problem = problems[(i * 5 + rng.randint(0, 2)) % len(problems)]
        reg = None
        if fam is not None:
            cands = [p for p in eq_points if _family(p["name"]) == fam]
            reg = rng.choice(cands)["reg"]
        level = "一般" if rng.random() < 0.8 else "较大" if rng.random() < 0.85 else "严重"
        chk = _day(rng, date(2024, 1, 3), date(2025, 6, 25))
        tstamp = datetime(chk.year, chk.month, chk.day, rng.randint(8, 17), rng.randint(0, 59), rng.randint(0, 59))
        limit = chk + timedelta(days=rng.choice([3, 7, 15, 30]))
        row = [f"YHPC{i + 1:06d}", reg, ttype, level, problem,
               rng.choice(checkers), tstamp.strftime("%Y-%m-%d %H:%M:%S"), _ymd_int(limit),
               None, None, "未整改", None, None, None, tstamp.strftime("%Y-%m-%d %H:%M:%S")]
        if rng.random() < 0.68:
            deal = chk + timedelta(days=rng.randint(0, (limit - chk).days))
            acc = deal + timedelta(days=rng.randint(1, 4))
            row[8:14] = [rng.choice(fixers), _ts(deal, rng), "已整改", rng.choice([chief, officer1]),
                         acc.isoformat(), "合格" if rng.random() < 0.9 else "不合格"]
            row[14] = _ts(acc, rng)
        yh.append(row)
    # index 11: dealDate before checkDate
    r = yh[11]
    r[6], r[7] = "2024-08-20 10:30:00", 20240904
    r[8:14] = [fixers[2], "2024-08-16 15:00:00", "已整改", chief, "2024-08-22", "合格"]
    r[14] = "2024-08-22 17:00:00"
    # index 19: impossible rectification date
    r = yh[19]
    r[6], r[7] = "2024-02-19 09:12:40", 20240305
    r[8:14] = [fixers[3], "2024-02-30", "已整改", officer1, "2024-03-04", "合格"]
    r[14] = "2024-03-04 11:20:00"
    # index 27: full-width equipment code
    yh[27][1] = _fullwidth(eq_points[2]["reg"])
    yh[27][2], yh[27][4] = "SB", "层门门锁触点接触不良"
    yh[33][7] = None                                   # index 33: no limit date (optional field)
    rows = [tuple(r) for r in yh]
    rows.insert(40, rows[39])                          # exact duplicate of index 39
    T["yh_pc"] = ([
        ("yhbh", "TEXT"), ("sbdm", "TEXT"), ("yhlb", "TEXT"), ("yhjb", "TEXT"), ("yhms", "TEXT"),
        ("pcr", "TEXT"), ("pcrq", "DATETIME"), ("zgqx", "INTEGER"), ("zgr", "TEXT"), ("zgrq", "DATETIME"),
        ("zgjg", "TEXT"), ("ysr", "TEXT"), ("ysrq", "DATE"), ("ysjl", "TEXT"), ("last_update", "DATETIME"),
    ], rows)
    return T


# --------------------------------------------------------------------------- attachments

#: A risk notice both units print from the province's template: identical bytes, stored once.
SHARED_NOTICE = sample_files.pdf_bytes("Jiangsu special equipment risk notice (template)")


def _jpeg(text: str) -> bytes:
    """A small valid JPEG whose bytes differ by `text` (a comment segment after APP0)."""
    base = sample_files.jpeg_bytes()
    comment = text.encode("utf-8")
    com = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    app0_end = 2 + 2 + int.from_bytes(base[4:6], "big")
    return base[:app0_end] + com + base[app0_end:]


def demo_files(tables: dict[str, tuple[list[tuple[str, str]], list[tuple]]]) -> dict[str, bytes]:
    """Unit A's attachments, by path under its file folder (`var/demo_files/<unit>/`): the
    documents its tables name (rule documents, training sign-in sheets, risk images)."""
    out: dict[str, bytes] = {}
    for row in tables["t_rule_doc"][1]:
        out[row[3]] = sample_files.docx_bytes(f"{COM_A} {row[2]}")
    for row in tables["t_training_plan"][1]:
        out[row[9].replace("\\", "/")] = _jpeg(f"sign-in sheet {row[5]}")
    for _, kind, path, *_ in tables["t_risk_image"][1]:
        ext = path.rsplit(".", 1)[-1]
        out[path] = (SHARED_NOTICE if ext == "pdf" else _jpeg(kind) if ext == "jpg"
                     else sample_files.png_bytes(3, 3, (200, 30, 30)))
    return out


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write the files, leaving those already there with the same bytes untouched (their
    modification time too: a rerun of the demo reads nothing again)."""
    for rel, data in files.items():
        path = folder / rel
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


# --------------------------------------------------------------------------- writing

def _write(path: Path, tables: dict[str, tuple[list[tuple[str, str]], list[tuple]]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    con = sqlite3.connect(tmp)
    try:
        for name in sorted(tables):
            cols, rows = tables[name]
            con.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c} {t}" for c, t in cols)})')
            con.executemany(f'INSERT INTO "{name}" VALUES ({", ".join("?" * len(cols))})', rows)
        con.commit()
    finally:
        con.close()
    for suffix in ("-journal", "-wal", "-shm"):
        stale = path.with_name(path.name + suffix)
        if stale.exists():
            stale.unlink()
    os.replace(tmp, path)


def make_demo_sources(var_dir: Path) -> dict[str, Path]:
    """Create (overwriting) the two demo units' SQLite sources; return {mapping stem: path}."""
    var_dir = Path(var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    out: dict[str, Path] = {}
    for stem, build in ((UNIT_A, _unit_a), (UNIT_B, _unit_b)):
        path = var_dir / f"{stem}.sqlite"
        tables = build(rng)
        _write(path, tables)
        if stem == UNIT_A:  # its attachments in a folder; unit B keeps them in BLOB columns
            _write_files(var_dir / "demo_files" / stem, demo_files(tables))
        out[stem] = path
    return out


# The key column of every source table (the mappings' `key:`; t_department/t_employee feed queries).
SOURCE_KEYS: dict[str, dict[str, str]] = {
    UNIT_A: {"t_company": "id", "t_department": "id", "t_employee": "id", "t_rule_doc": "id",
             "t_training_plan": "id", "t_risk_point": "id", "t_hazard": "id", "t_risk_image": "id",
             "t_hidden_danger": "id"},
    UNIT_B: {"dw_jbxx": "dwbh", "bm_xx": "bmbh", "ry_xx": "rybh", "zd_gl": "zdbh", "px_jh": "jhbh",
             "px_jl": "jlbh", "fxd_xx": "fxdbh", "wxy_xx": "wxybh", "fxtk": "tkbh", "yh_pc": "yhbh"},
}

# What was planted, as {"table.column": [source keys]} (the key column is SOURCE_KEYS[unit][table]),
# for tests and for anyone asserting on the pipeline's cleaning and rejects. Each list is exact:
# no other key of that column has the property.
PLANTED: dict[str, dict[str, object]] = {
    UNIT_A: {
        # not ric.is_valid once half-width and trimmed: 9 wrong check digit, 17 birth date 1988-02-31
        "invalid_id_numbers": {"t_employee.id_no": [9, 17]},
        "fullwidth": {"t_employee.id_no": [12], "t_risk_point.equip_code": [4]},
        "untrimmed": {"t_employee.emp_name": [5], "t_risk_point.point_name": [2],
                      "t_hazard.duty_unit": [19]},
        "blank": {"t_department.manager_tel": [7], "t_hazard.measure_type": [6],
                  "t_risk_point.reviewer": [10]},
        "accident_type_separator": {"t_risk_point.accident_type": [1, 3, 7],
                                    "t_hazard.accident_type": [12]},
        "duty_man_separator": {"t_risk_point.duty_person": [5, 6], "t_hazard.duty_person": [17, 18]},
        "dirty_phone": {"t_company.contact_phone": [1], "t_department.manager_tel": [1, 3, 6]},
        "post_birth_area_code": {},
        "phone_extension": {},
        "local_phone": {},
        "exact_duplicate": {"t_employee": [20], "t_risk_point": [8], "t_hazard": [13],
                            "t_hidden_danger": [40]},
        "newer_version": {"t_hidden_danger": {"key": 31, "newer": "2025-04-12 14:30:00",
                                              "older": "2025-04-02 09:15:00"}},
        "soft_deleted": {"t_risk_point": [21], "t_hazard": [30], "t_hidden_danger": [47]},
        "orphan_hazard": {"t_hazard.point_no": [45], "riskNo": "FX202400000099"},
        "deal_before_check": {"t_hidden_danger.rectify_date": [15]},
        "impossible_date": {"t_hidden_danger.find_date": [23], "value": "2024-02-30"},
    },
    UNIT_B: {
        # RY0007 wrong check digit, RY0022 17 characters
        "invalid_id_numbers": {"ry_xx.sfzhm": ["RY0007", "RY0022"]},
        "fullwidth": {"ry_xx.sfzhm": ["RY0010"], "yh_pc.sbdm": ["YHPC000028"]},
        "untrimmed": {"dw_jbxx.dwmc": ["DW001"], "ry_xx.ssbm": ["RY0005"], "ry_xx.sfzhm": ["RY0015"],
                      "ry_xx.xm": ["RY0013"], "fxd_xx.fxdmc": ["FXD-2023-0008"]},
        "blank": {"bm_xx.lxdh": ["BM04", "BM07"], "fxd_xx.shr": ["FXD-2023-0009"],
                  "wxy_xx.zrdw": ["WXY00015"], "wxy_xx.csfl": ["WXY00021"]},
        "accident_type_separator": {"fxd_xx.sgtz": ["FXD-2023-0001", "FXD-2023-0003"],
                                    "wxy_xx.sgtz": ["WXY00004"]},
        "duty_man_separator": {"fxd_xx.zrr": ["FXD-2023-0011", "FXD-2023-0013"],
                               "wxy_xx.zrr": ["WXY00009", "WXY00010"]},
        "dirty_phone": {"dw_jbxx.lxdh": ["DW001"], "bm_xx.lxdh": ["BM01", "BM02", "BM03"]},
        # valid by GB 11643, though python-stdnum ties the area code to the birth year
        "post_birth_area_code": {"ry_xx.sfzhm": ["RY0003"]},
        "phone_extension": {"bm_xx.lxdh": ["BM05"]},
        "local_phone": {"bm_xx.lxdh": ["BM06"]},
        "exact_duplicate": {"ry_xx": ["RY0018"], "wxy_xx": ["WXY00025"], "yh_pc": ["YHPC000040"]},
        "newer_version": {"fxd_xx": {"key": "FXD-2023-0006", "newer": "2025-01-15 16:20:00",
                                     "older": "2024-03-02 09:00:00"}},
        "soft_deleted": {},
        "orphan_hazard": {"wxy_xx.fxdbh": ["WXY00041"], "riskNo": "FXD-2023-0099"},
        "deal_before_check": {"yh_pc.zgrq": ["YHPC000012"]},
        "impossible_date": {"yh_pc.zgrq": ["YHPC000020"], "value": "2024-02-30"},
    },
}
