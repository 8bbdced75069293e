"""Issue 26, part A, first step: what `prepare` (map, clean, validate, identify) costs on a LARGE
chunk, this tree beside older revisions, so a change made for small units is seen not to cost
big ones (per-row throughput and memory).

    uv run python benchmarks/large_frame.py [--rows 100000] [--rounds 3] [--rev f11d5b7 ...]

Builds, once, the demo unit's (`units.py`) three daily datasets 06, 07, 09 as raw chunks of
`--rows` rows each (the demo rows repeated; 09 carries its findings, ~5 % of rows), then in a
fresh child per revision and round (interleaved), imports that revision's `etl` and times
`pipeline.prepare` of each chunk once. Prints the median seconds per dataset, rows/s and the
child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

TX_CODES = ("06", "07", "09")


def build(folder: Path, rows: int) -> tuple[Path, Path]:
    """One demo unit; each daily dataset's raw chunk repeated up to `rows` rows, pickled."""
    import pandas as pd

    import units
    from etl import pipeline
    from etl.common import clock
    from etl.mapping import load_mapping

    unit = units.make_units(folder / "unit", 1)[0]
    m = load_mapping(unit.mapping)
    frames = {}
    for tx in TX_CODES:
        p = pipeline.Plan(m, tx, "full", "bench", clock.now())
        raw = pd.concat(list(pipeline.extract_chunks(p)), ignore_index=True)
        frames[tx] = pd.concat([raw] * (rows // len(raw) + 1), ignore_index=True).iloc[:rows]
    path = folder / "frames.pkl"
    pd.to_pickle(frames, path)
    return unit.mapping, path


def child(mapping: Path, frames_path: Path) -> dict[str, float]:
    """Seconds of `prepare` per dataset, in this process (the `etl` on PYTHONPATH)."""
    sys.path.insert(0, os.environ["PYTHONPATH"])  # ahead of ROOT, which the module put first
    import pandas as pd

    from etl import pipeline
    from etl.common import clock
    from etl.mapping import load_mapping
    from etl.standard.clean import Audit

    m = load_mapping(mapping)
    frames = pd.read_pickle(frames_path)
    out = {}
    for tx in TX_CODES:
        p = pipeline.Plan(m, tx, "full", "bench", clock.now())
        pipeline.prepare(frames[tx].head(50), p, Audit())  # first calls: caches, imports
        t0 = time.perf_counter()
        prepared = pipeline.prepare(frames[tx], p, Audit())
        out[tx] = time.perf_counter() - t0
        out[f"{tx}_findings"] = len(prepared.findings)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["etl"] = str(Path(pipeline.__file__).resolve().parents[1])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rev", action="append", default=[], help="also time this git revision")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        Path(args.child[2]).write_text(json.dumps(child(Path(args.child[0]), Path(args.child[1]))))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="etl-large-frame-"))
    try:
        mapping, frames = build(folder, args.rows)
        from small_units import checkout

        codes = {rev: checkout(rev, folder / f"rev{i}") for i, rev in enumerate(args.rev)}
        codes["this tree"] = ROOT
        got: dict[str, list[dict]] = {w: [] for w in codes}
        for r in range(args.rounds):
            for who, code in codes.items():
                result = folder / "result.json"
                subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(mapping),
                                str(frames), str(result)], check=True, cwd=code,
                               env={**os.environ, "PYTHONPATH": str(code)})
                got[who].append(json.loads(result.read_text()))
                if got[who][-1].pop("etl") != str(Path(code).resolve() / "etl"):
                    raise RuntimeError(f"{who}: the child imported another tree's etl")
                print(f"round {r + 1} {who}: " + ", ".join(
                    f"{tx} {got[who][-1][tx]:.2f} s" for tx in TX_CODES), flush=True)
        print(f"\nprepare of {args.rows:,} rows, medians of {args.rounds} (load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}):")
        print(f"  {'':14}" + "".join(f"{tx + ' s':>9}{tx + ' rows/s':>12}" for tx in TX_CODES)
              + f"{'findings 09':>12}{'peak MB':>9}")
        for who, results in got.items():
            med = {k: statistics.median(x[k] for x in results) for k in results[0]}
            print(f"  {who:14}" + "".join(f"{med[tx]:9.2f}{args.rows / med[tx]:12,.0f}" for tx in TX_CODES)
                  + f"{med['09_findings']:12,.0f}{med['rss_mb']:9.0f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
