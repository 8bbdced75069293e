"""How well `etl scaffold` places the standard's fields (issue 16).

    uv run python benchmarks/scaffold_accuracy.py [--sqlite-only] [-v]

Runs scaffold's planning on each measured schema (tests/scaffold_schemas: the demo's two
SQLite sources with mappings/demo_*.yaml as their truth, and the Chinese, pinyin and English
schemas written for the test with their true mappings) on SQLite, and on PostgreSQL and MariaDB
when it can start them (tests/servers.py), where the pinyin schema also carries Chinese column
comments. Prints per schema and backend: fields mapped in the truth, placed correctly, placed
wrongly, missed, precision, recall, guesses marked high and wrong guesses marked high; `-v`
lists the wrong and missed ones. Then the value maps, for schemas whose truth gives them
(`values_truth:`, codes explained by a dictionary table): maps proposed of those expected,
entries right of the entries expected (a code cleaning reads as it is counts), entries proposed
and how many of them are right, and maps marked high with a wrong or missing entry. Then the time to scaffold the pinyin schema among 1,000
unrelated tables (`--noise-tables`). Totals are given apart for the schemas the vocabulary was tuned
on and for the held-out schemas (`schemas.HELD_OUT`), written after it was frozen.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sqlalchemy as sa  # noqa: E402

import scaffold_schemas as schemas  # noqa: E402
from etl.onboarding import scaffold  # noqa: E402
from etl.source.connect import read_only  # noqa: E402


def _plan(url: str) -> list:
    engine = sa.create_engine(url)
    try:
        with read_only(engine) as conn:
            return scaffold.scaffold(conn)
    finally:
        engine.dispose()


def _sources(tmp: Path, backends: list[str]):
    """(schema, backend, url) for every schema on every backend that starts."""
    from etl.onboarding.demo_data import make_demo_sources

    demo = make_demo_sources(tmp / "demo")
    for name in schemas.DEMO:
        yield name, "sqlite", f"sqlite:///{demo[name]}"
    for name in (*schemas.WRITTEN, *schemas.HELD_OUT):
        url = f"sqlite:///{tmp / name}.sqlite"
        schemas.build(name, url)
        yield name, "sqlite", url
    for backend in backends:
        from servers import ServerBinaryMissing, create_database, start_mariadb, start_postgres

        try:
            server = (start_postgres if backend == "postgresql" else start_mariadb)()
        except ServerBinaryMissing as e:
            print(f"({backend} not measured: {e})")
            continue
        try:
            for name in (*schemas.WRITTEN, *schemas.HELD_OUT):
                url = create_database(server.admin_url, prefix="scaffold")
                schemas.build(name, url)
                yield name, backend, url
        finally:
            server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sqlite-only", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="list the wrong guesses")
    p.add_argument("--noise-tables", type=int, default=1000, metavar="N",
                   help="also time scaffold on the pinyin schema among N unrelated tables "
                   "(SQLite; 0: skip)")
    args = p.parse_args()
    backends = [] if args.sqlite_only else ["postgresql", "mariadb"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, backend, url in _sources(Path(tmp), backends):
            drafts = _plan(url)
            rows.append((name, backend, schemas.measure(drafts, schemas.truth(name)),
                         schemas.measure_values(drafts, schemas.values_truth(name))))
    tuned = held = schemas.Score()
    v_tuned = v_held = schemas.ValuesScore()
    for name, _, s, v in rows:
        if name in schemas.HELD_OUT:
            held, v_held = held.add(s), v_held.add(v)
        else:
            tuned, v_tuned = tuned.add(s), v_tuned.add(v)
    print(f"{'schema':<20} {'backend':<10} {'truth':>5} {'right':>5} {'wrong':>5} {'missed':>6} "
          f"{'precision':>9} {'recall':>6} {'high':>5} {'wrong high':>10}")
    totals = [("all tuned on", "", tuned), ("all held out", "", held)]
    for name, backend, s in [*((r[0], r[1], r[2]) for r in rows), *totals]:
        print(f"{name:<20} {backend:<10} {s.truth:>5} {s.correct:>5} {s.wrong:>5} {s.missed:>6} "
              f"{s.precision:>9.1%} {s.recall:>6.1%} {s.high:>5} {s.wrong_high:>10}")
        if args.verbose and not name.startswith("all"):
            for w in s.wrong_list:
                what = f"wrong: [{w[0]}] {w[1]} -> {w[2]} ({w[3]} {w[4]:g})" if w[2] else \
                    f"missed: [{w[0]}] {w[1]}"
                print(f"    {what}; truth {w[5]}")
    print(f"\nvalue maps (truth columns with values_truth:)\n{'schema':<20} {'backend':<10} "
          f"{'maps':>9} {'entries right':>13} {'recall':>6} {'proposed right':>14} {'precision':>9} "
          f"{'high':>4} {'wrong high':>10}")
    v_totals = [("all tuned on", "", v_tuned), ("all held out", "", v_held)]
    for name, backend, v in [*((r[0], r[1], r[3]) for r in rows if r[3].expected), *v_totals]:
        print(f"{name:<20} {backend:<10} {f'{v.proposed}/{v.expected}':>9} "
              f"{f'{v.right}/{v.entries}':>13} {v.recall:>6.1%} {f'{v.given_right}/{v.given}':>14} "
              f"{v.precision:>9.1%} {v.high:>4} {v.wrong_high:>10}")
        if args.verbose and not name.startswith("all"):
            for w in v.wrong_list:
                print(f"    [{w[0]}] {w[1]} {w[2]!r}: draft {w[3]!r}, truth {w[4]!r}")
    if args.noise_tables:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'noise.sqlite'}"
            _noise(url, args.noise_tables)
            schemas.build("pinyin", url)
            started = time.perf_counter()
            s = schemas.measure(_plan(url), schemas.truth("pinyin"))
            took = time.perf_counter() - started
        print(f"\npinyin among {args.noise_tables:,} unrelated tables (SQLite): {took:.1f} s, "
              f"{s.correct} of {s.truth} right, {s.wrong} wrong ({s.wrong_high} marked high)")
    return 0


def _noise(url: str, n: int) -> None:
    """N tables of an ERP's generic columns (id, code, name, status, remark ...), 15 each."""
    rng = random.Random(1)
    words = ["id", "code", "name", "type", "status", "create_time", "update_time", "remark",
             "amount", "qty", "price", "user_id", "dept_id", "org_id", "flag", "memo", "addr",
             "tel", "desc", "level"]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i in range(n):
            cols = ", ".join(f'"{c}" TEXT' for c in rng.sample(words, 15))
            conn.exec_driver_sql(f"CREATE TABLE t_misc_{i} ({cols})")
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
