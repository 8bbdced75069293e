"""Many using units for scale tests: copies of the demo unit `demo_suzhou_lift`.

    units = make_units(folder, 1000)        # folder/mappings/苏州电梯0001.yaml ..., folder/sources/*.sqlite

Each unit gets its own SQLite source (a copy of the demo unit's file, made once by
`etl.onboarding.demo_data.make_demo_sources`) and its own mapping, written from
`mappings/demo_suzhou_lift.yaml` with `source: {url: sqlite:////abs/path}`, a distinct valid
unified social credit code (GB 32100, check characters included) and a distinct company name.
Mapping file names are Chinese, as real ones are (`苏州电梯0001.yaml`); a unit's name (for a
trigger's `units` param) is its file name without `.yaml`.

The copy's unit table (`dw_jbxx`, dataset 01) is rewritten with the unit's own code and name:
the pipeline rejects a 01 row whose orgNo differs from its mapping's, so every copy is a valid
unit for the weekly datasets too. Record IDs derive from orgNo, so no two units share one.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import yaml

from etl.onboarding.demo_data import UNIT_B, make_demo_sources, make_uscc

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "mappings" / f"{UNIT_B}.yaml"
PREFIX = "苏州电梯"


@dataclass(frozen=True)
class Unit:
    name: str        # mapping file stem, e.g. 苏州电梯0001
    org_no: str
    com_name: str
    mapping: Path
    source: Path


def org_no(n: int) -> str:
    """The n-th unit's unified social credit code: Suzhou Wuzhong, valid check characters."""
    return make_uscc("91320506", f"{n:08d}")


def com_name(n: int) -> str:
    return f"苏州吴中第{n}电梯安装维保有限公司"


def template_source(folder: Path) -> Path:
    """The demo unit's SQLite source, made once in `folder`."""
    path = folder / f"{UNIT_B}.sqlite"
    if not path.exists():
        path = make_demo_sources(folder)[UNIT_B]
    return path


def make_unit(n: int, template: Path, mappings: Path, sources: Path, prefix: str = PREFIX) -> Unit:
    """Unit number `n` (from 1): its source copy and its mapping file."""
    unit = Unit(f"{prefix}{n:04d}", org_no(n), com_name(n), mappings / f"{prefix}{n:04d}.yaml",
                sources / f"unit{n:05d}.sqlite")
    shutil.copyfile(template, unit.source)
    with sqlite3.connect(unit.source) as con:
        con.execute("UPDATE dw_jbxx SET tyshxydm = ?, dwmc = ?", (unit.org_no, unit.com_name))
    con.close()
    raw = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    raw["unit"] = {"orgNo": unit.org_no, "comName": unit.com_name}
    raw["source"] = {"url": f"sqlite:///{unit.source.resolve()}"}
    unit.mapping.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return unit


def make_mappings(folder: Path, count: int, source: Path, *, hourly_every: int = 0,
                  prefix: str = PREFIX) -> list[Path]:
    """Only the mapping files of `count` units (folder/苏州电梯0001.yaml ...), all reading the one
    SQLite file `source`: for planning, which reads mappings and never a source. With
    `hourly_every` = k, every k-th unit sets `frequency: hourly` on its dataset 09, so the
    frequent DAG has work at the top of each hour and none at the other ticks."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{Path(source).resolve()}"}
    raw["unit"] = {"orgNo": "@ORG@", "comName": "@NAME@"}
    plain = yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)  # dumped once: 10,000 are many
    raw["datasets"]["09"]["frequency"] = "hourly"
    hourly = yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)
    paths = []
    for n in range(1, count + 1):
        text = hourly if hourly_every and n % hourly_every == 0 else plain
        path = folder / f"{prefix}{n:04d}.yaml"
        path.write_text(text.replace("@ORG@", org_no(n)).replace("@NAME@", com_name(n)),
                        encoding="utf-8")
        paths.append(path)
    return paths


def make_units(folder: Path, count: int, prefix: str = PREFIX) -> list[Unit]:
    """`count` units under `folder` (mappings/ and sources/, created; existing files replaced)."""
    folder = Path(folder)
    mappings, sources = folder / "mappings", folder / "sources"
    for d in (mappings, sources):
        d.mkdir(parents=True, exist_ok=True)
    template = template_source(folder / "template")
    return [make_unit(n, template, mappings, sources, prefix) for n in range(1, count + 1)]
