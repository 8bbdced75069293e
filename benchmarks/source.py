"""A unit's source database for the benchmark: A.11 hidden-danger records (txCode 09) made by
`generate_series` inside PostgreSQL, so a million rows take seconds, not minutes of Python.

The values are shaped like a real unit's: typed columns (dates as `date`, the update time as
`timestamp`, an integer key), enumerations with skewed frequencies, open items only among the
recent ones (so few are overdue), and a little of the dirt cleaning exists for (synonyms,
full-width spaces), plus a few rows that validation must reject. Everything derives from
`hashint8extended(id, seed)`, so the same N gives the same rows on every run.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from stdnum.cn import uscc

from tests.helpers import hidden_danger_mapping_text  # the tests' A.11 mapping, same columns

TABLE = "t_hidden_danger"

DDL = """
CREATE TABLE {table} (
    id          bigint PRIMARY KEY,
    task_no     varchar(50) NOT NULL,
    reg_no      varchar(30),
    kind        varchar(20),
    level       varchar(20),
    problem     varchar(2000),
    checker     varchar(50),
    check_date  date,
    limit_date  date,
    deal_man    varchar(50),
    deal_date   date,
    deal_info   varchar(10),
    accept_man  varchar(50),
    accept_date date,
    accept_info varchar(20),
    modify_time timestamp NOT NULL,
    del_flag    smallint NOT NULL DEFAULT 0
)"""

# r(k): a deterministic pseudo-random integer in [0, 10000) per row and stream k.
_R = "(abs(hashint8extended(g, {k}) % 10000))::int"

# Dates are relative to `base` (the day the data is made, less 3 days) so that open items are
# recent, as they are in a live system, and an incremental window can start after all of them.
INSERT = """
INSERT INTO {table}
SELECT g + {first_id} - 1 AS id,
       'YH' || to_char(c.check_date, 'YYYYMMDD') || lpad((g + {first_id} - 1)::text, 9, '0'),
       CASE WHEN {r1} < 7000 THEN
            '3' || (ARRAY['110','120','210','220','310','320','410','420'])[1 + {r2} % 8]
            || (ARRAY['3201','3202','3205','3206','3211','3213'])[1 + {r3} % 6]
            || lpad((2000 + {r4} % 25)::text, 4, '0') || lpad(({r5} * 7 + g % 1000)::text, 8, '0')
            || CASE WHEN {r6} < 5 THEN 'X' ELSE '' END           -- 0.05%: 21 characters (reject)
       END AS reg_no,
       CASE WHEN {r7} < 100 THEN '设备'                            -- 1%: a synonym (cleaned)
            WHEN {r7} < 5000 THEN '设备类' WHEN {r7} < 7500 THEN '管理类'
            WHEN {r7} < 9000 THEN '作业过程（人员）类' ELSE '环境类' END AS kind,
       CASE WHEN {r8} < 5 THEN '特大隐患'                          -- 0.05%: not an enum (reject)
            WHEN {r8} < 8500 THEN '一般事故隐患' WHEN {r8} < 9800 THEN '较大事故隐患'
            ELSE '严重事故隐患' END AS level,
       (ARRAY['安全阀校验过期','压力表未按期检定','防护栏缺失','接地电阻超标','电梯层门锁失效',
              '起重机限位器失灵','锅炉水位计模糊','压力管道支吊架松动','气瓶存放未固定','叉车制动距离超标',
              '应急预案未演练','作业人员未持证上岗','设备台账缺失','维保记录不全','警示标识脱落',
              '爆破片超期未更换','液位计泄漏','钢丝绳断丝超标','操作规程未上墙','消防通道堵塞'])[1 + {r9} % 20]
       || '，位置：' || (ARRAY['一号车间','二号车间','三号车间','储罐区','锅炉房','仓库','装卸站台',
                            '机修间','配电室','办公楼'])[1 + {r10} % 10]
       || '，设备编号' || lpad(({r11} * 10 + g % 10)::text, 6, '0') AS problem,
       c.checker,
       c.check_date,
       c.check_date + (7 + {r12} % 24) AS limit_date,
       CASE WHEN c.open THEN NULL ELSE c.fixer END AS deal_man,
       CASE WHEN c.open THEN NULL ELSE c.deal_date END AS deal_date,
       CASE WHEN c.open THEN '未整改' ELSE '已整改' END AS deal_info,
       CASE WHEN c.accepted THEN c.acceptor END AS accept_man,
       CASE WHEN c.accepted THEN c.deal_date + {r13} % 6 END AS accept_date,
       CASE WHEN c.accepted THEN
            CASE WHEN {r14} < 200 THEN '整改验收不合格' ELSE '整改验收合格' END END AS accept_info,
       LEAST(COALESCE(c.deal_date + {r13} % 6, c.check_date), {base}::date)
           + make_interval(secs => abs(hashint8extended(g, 15) % 86400)) AS modify_time,
       CASE WHEN {r16} < 30 THEN 1 ELSE 0 END AS del_flag           -- 0.3% soft-deleted
FROM generate_series(1, {rows}) AS g,
LATERAL (
    SELECT d.check_date, d.open,
           NOT d.open AND {r17} < 9500 AS accepted,
           LEAST(d.check_date + {r18} % 20, {base}::date) AS deal_date,
           n.names[1 + {r19} % 600] || CASE WHEN {r20} < 200 THEN '　' ELSE '' END AS checker,
           n.names[1 + {r21} % 600] AS fixer,
           n.names[1 + {r22} % 600] AS acceptor
    FROM (SELECT {base}::date - ({r23} % 1095) AS check_date) AS c0,
    LATERAL (SELECT c0.check_date, c0.check_date > {base}::date - 30 AND {r24} < 6000 AS open) AS d,
    (SELECT ARRAY(SELECT s || m FROM unnest(ARRAY['张','王','李','赵','刘','陈','杨','黄','周','吴',
                                                   '徐','孙','胡','朱','高','林','何','郭','马','罗'])
                          AS s, unnest(ARRAY['伟','芳','娜','敏','静','强','磊','军','洋','勇',
                                             '艳','杰','涛','明','超','秀英','华','平','刚','桂英',
                                             '建国','志强','海燕','晓东','雪梅','文斌','丽娟',
                                             '国庆','春生','红梅']) AS m
                  ORDER BY s, m) AS names) AS n
) AS c
"""


def org_no(n: int) -> str:
    """The n-th unit's unified social credit code (valid check character)."""
    base = f"9132011{n:010d}"
    return base + uscc.calc_check_digit(base)


def insert_sql(table: str, rows: int, first_id: int = 1, base: str = "current_date - 3") -> str:
    streams = {f"r{k}": _R.format(k=k) for k in range(1, 25)}
    return INSERT.format(table=table, rows=rows, first_id=first_id, base=f"({base})", **streams)


def create(conn: sa.Connection, rows: int, table: str = TABLE, index: bool = True) -> None:
    """(Re)create the source table with `rows` rows; `modify_time` indexed, as a source that
    supports incremental reads is. `conn` must be in autocommit mode (VACUUM)."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    conn.exec_driver_sql(DDL.format(table=table))
    conn.execute(sa.text(insert_sql(table, rows)))
    if index:
        conn.exec_driver_sql(f"CREATE INDEX ix_{table}_modify_time ON {table} (modify_time)")
    conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def write_mapping(directory: Path, org: str, env: str, table: str = TABLE,
                  name: str = "南京某某化工有限公司", hard_deletes: str = "never",
                  file_name: str | None = None) -> Path:
    """The unit's mapping. `hard_deletes: never` by default: `run.py`'s incremental case
    measures reading the window; `sweep.py` measures comparing every key beside it."""
    path = directory / (file_name or f"unit_{org}.yaml")
    text = hidden_danger_mapping_text(org, env, table, name).replace(
        "    key: [id]\n", f"    key: [id]\n    hard_deletes: {hard_deletes}\n")
    path.write_text(text, encoding="utf-8")
    return path


def change_some(conn: sa.Connection, fraction: float, stamp: str, round_no: int,
                table: str = TABLE) -> int:
    """Touch `fraction` of the rows as a unit's users would: a later update time and a new
    acceptance note on the problem text. Returns how many rows changed."""
    every = max(1, round(1 / fraction))
    result = conn.execute(sa.text(
        f"UPDATE {table} SET modify_time = :stamp, problem = problem || '（复查' || :n || '）' "
        f"WHERE (id + :n) % :every = 0"), {"stamp": stamp, "n": round_no, "every": every})
    return result.rowcount
