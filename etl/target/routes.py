"""One route per (unit, dataset): a unit's dataset is collected either by the database route
(5.2.1, we read the unit's database) or by the interface route (5.2.2, the unit pushes it),
never both.

Both routes write the same table under the same orgNo, but identify records differently (the
database route by the mapping's source key, the interface route by the unit's record ID), so a
dataset taking both would hold each record twice, and a full load of the database route would
mark every pushed record deleted (absent from the source). So:
- the database route does not load a (orgNo, txCode) that `ingest_push` holds a message for
  (`refuse_pushed`, called before a dataset is loaded: that dataset fails, the others go on);
- `receive` refuses a message for a (orgNo, txCode) the database route has loaded: a successful
  `ingest_run` of another mode than `push` (`pulled_message`).
The route is fixed by the first success; moving a dataset to the other route is the collecting
organisation's decision, not a unit's, and no command does it (docs/interface.md). Here, beside
`history`, because both routes ask it: the database route (`etl.pipeline`) sits below the
interface route (`etl.interface`) and may not import it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl.common.errors import EtlError
from etl.target import schema as target
from etl.target.history import PUSH_MODE
from etl.target.migrate import ensure_schema


class RouteConflict(EtlError):
    """The dataset is pushed by the unit: the database route must not load it too."""


def pushed(conn: Connection, org_no: str, tx_code: str) -> bool:
    """Whether the unit has pushed the dataset over the interface route (ingest_push)."""
    p = target.ingest_push
    return conn.execute(sa.select(p.c.orgNo).where(p.c.orgNo == org_no, p.c.txCode == tx_code)
                        .limit(1)).first() is not None


def pulled(conn: Connection, org_no: str, tx_code: str) -> bool:
    """Whether the database route has loaded the dataset (a successful run of its own)."""
    r = target.ingest_run
    return conn.execute(sa.select(r.c.runKey).where(
        r.c.orgNo == org_no, r.c.txCode == tx_code, r.c.status == "success",
        r.c.mode != PUSH_MODE).limit(1)).first() is not None


def refuse_pushed(engine: Engine, org_no: str, tx_code: str) -> None:
    """Raise `RouteConflict` when the unit pushes the dataset (callers name the mapping)."""
    ensure_schema(engine)
    with engine.connect() as conn:
        if not pushed(conn, org_no, tx_code):
            return
    raise RouteConflict(
        f"unit {org_no} pushes txCode {tx_code} over the interface route "
        f"(ingest_push) and a unit's dataset takes one route, so the database route does not load "
        f"it: remove dataset \"{tx_code}\" from the mapping (docs/interface.md)")


def pulled_message(conn: Connection, org_no: str, tx_code: str) -> str | None:
    """Why `receive` refuses the unit's message for `tx_code` (Chinese first), or None."""
    if not pulled(conn, org_no, tx_code):
        return None
    return (f"txcode {tx_code} 的数据已由数据库方式（5.2.1）从本单位数据库归集，同一单位的同一类数据只能"
            f"选一种归集方式：本报文未加载，请停止以接口方式报送该类数据，或联系归集单位 / txcode "
            f"{tx_code} of unit {org_no} is collected by the database route (5.2.1): a unit's "
            f"dataset takes one route; nothing of this message was loaded: stop pushing it, or ask "
            f"the collecting organisation")
