"""What collecting attachments costs a dataset load (issue 15), in one process on SQLite.

N safety rules (04), each naming its own small PDF in a local folder, loaded three ways:
without `file:` (the name kept as text: the baseline), with `file:` (every file read, typed,
hashed and stored), and again with `file:` unchanged (the quick-skip index: a `stat` and a
small JSON read per file, nothing copied, no batch). Prints seconds, rows/s and the per-file
overhead. Figures, not assertions: the machine is shared.

    uv run python benchmarks/attachments_pipeline.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ORG = "91320115MA1R7KX30X"
MAPPING = """\
unit: {{orgNo: "{org}", comName: 南京某某化工有限公司}}
source: {{url: "sqlite:///{source}"}}
datasets:
  "04":
    table: t_rule
    key: [id]
    fields:
      fileName: title
      fileAppendix: {rule}
      uploadDate: upload_date
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="attach-bench-") as tmp:
        root = Path(tmp)
        os.environ["ETL_MEDIA_URL"] = str(root / "media")
        from etl import pipeline, target
        from etl.onboarding import sample_files
        from etl.mapping import load_mapping

        files = root / "files"
        (files / "制度").mkdir(parents=True)
        total = 0
        for i in range(args.rows):
            data = sample_files.pdf_bytes(f"rule {i}") + b"\n%" + os.urandom(16 * 1024).hex().encode()
            (files / "制度" / f"制度 {i:05d}.pdf").write_bytes(data)
            total += len(data)
        source = root / "source.sqlite"
        engine = sa.create_engine(f"sqlite:///{source}")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t_rule (id INTEGER PRIMARY KEY, title TEXT, "
                                 "attach_path TEXT, upload_date TEXT)")
            conn.execute(sa.text("INSERT INTO t_rule VALUES (:i, :t, :p, '2024-05-01')"),
                         [{"i": i, "t": f"制度 {i}", "p": f"制度/制度 {i:05d}.pdf"} for i in range(args.rows)])
        engine.dispose()

        def load(name: str, rule: str) -> tuple[float, object]:
            path = root / f"{name}.yaml"
            path.write_text(MAPPING.format(org=ORG, source=source, rule=rule), encoding="utf-8")
            m = load_mapping(path)
            tgt = target.connect(f"sqlite:///{root / (name + '.sqlite')}")
            target.ensure_schema(tgt)
            started = time.perf_counter()
            r = pipeline.run_dataset(tgt, m, "04")
            took = time.perf_counter() - started
            tgt.dispose()
            return took, r

        base_s, base = load("names", "attach_path")
        file_rule = f"{{column: attach_path, file: {{base: '{files}'}}}}"
        full_s, full = load("files", file_rule)
        rerun_s, rerun = load("files", file_rule)
        print(f"rows (files): {args.rows:,}, {total / 1e6:.1f} MB of PDFs")
        print(f"{'case':<34}{'seconds':>9}{'rows/s':>10}")
        for case, s, r in (("names only (no file:)", base_s, base), ("file: every file stored", full_s, full),
                           ("file: rerun, unchanged (skip)", rerun_s, rerun)):
            c = r.counts
            print(f"{case:<34}{s:>9.2f}{args.rows / s:>10,.0f}   I={c.inserted} unchanged={c.unchanged} "
                  f"batches={len(c.batches)}")
        print(f"per file: {(full_s - base_s) / args.rows * 1000:.2f} ms stored, "
              f"{(rerun_s - base_s) / args.rows * 1000:.2f} ms skipped (over the names-only load)")


if __name__ == "__main__":
    main()
