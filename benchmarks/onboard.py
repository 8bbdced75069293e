"""Issue 16: how long a register of N units takes to become N unit files, and `etl check` over them.

    uv run python benchmarks/onboard.py              # 1,000 units
    uv run python benchmarks/onboard.py --units 10000

Writes a register (CSV, Chinese headers, GB18030 as Excel in China saves it) of N units with
valid, distinct credit codes, a mappings folder holding mappings/systems/ehs_demo.yaml (the
demo's EHS-style schema, 9 datasets), then times, each as its own `etl` process (interpreter
start and imports included, as a person running it sees it):

- `etl onboard` writing N unit files;
- `etl onboard` again: every file unchanged;
- `etl check --offline mappings/` with an empty mapping cache, then with the cache warm.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "etl", "-q", *args], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"etl {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return took, done.stdout.strip().splitlines()[-1]


def main() -> None:
    from stdnum.cn import uscc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    n = parser.parse_args().units
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mappings"
        (folder / "systems").mkdir(parents=True)
        (folder / "systems" / "ehs_demo.yaml").write_bytes(
            (ROOT / "mappings" / "systems" / "ehs_demo.yaml").read_bytes())
        register = Path(tmp) / "单位名册.csv"
        lines = ["统一社会信用代码,单位名称,连接"] + [
            f"{(b := f'9132011{i:08d}MA') + uscc.calc_check_digit(b)},江苏第{i}号精细化工有限公司,unit_{i}" for i in range(n)]
        register.write_bytes(("\r\n".join(lines) + "\r\n").encode("gb18030"))
        env = {**os.environ, "ETL_CACHE_DIR": str(Path(tmp) / "cache")}
        onboard = ["onboard", str(register), "--extends", "systems/ehs_demo.yaml",
                   "--mappings-dir", str(folder)]
        rows = [("etl onboard (write)", *_timed(onboard, env)),
                ("etl onboard (again, unchanged)", *_timed(onboard, env)),
                ("etl check --offline (cold cache)", *_timed(["check", "--offline", str(folder)], env)),
                ("etl check --offline (warm cache)", *_timed(["check", "--offline", str(folder)], env))]
        files = len(list(folder.glob("*.yaml")))
    print(f"{n:,} units, {files:,} unit files written; each time is one `etl` process "
          f"(~1 s of it Python start and imports)")
    print("| step | seconds | per unit (ms) | last line |")
    print("|---|---:|---:|---|")
    for name, took, last in rows:
        print(f"| {name} | {took:.2f} | {1000 * took / n:.1f} | {last.replace(tmp, '…')[:90]} |")


if __name__ == "__main__":
    main()
