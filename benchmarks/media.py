"""Attachments (issue 15): MB/s and peak memory of copying one large file into the media store
from a local folder and from an HTTP file server, beside the plain copies they compete with.

    uv run python benchmarks/media.py              # a 1 GiB MP4-headed file, 3 rounds
    uv run python benchmarks/media.py --mb 256 --rounds 1

The file is written once (an MP4 header, then filler that is not all zeros). The HTTP server is
Python's `http.server` in its own process on 127.0.0.1, so it does not share the measuring
process's interpreter. Every copy runs in a fresh child process, into a fresh store (the
previous case's files removed and `sync`ed first, so no write-back overlaps), and reports its own wall time and peak RSS (`ru_maxrss`) minus the peak before the copy (imports,
a small warm-up fetch). Cases:

* `cp`: `shutil.copyfileobj` with 1 MiB buffers, file to file: the disk's own limit here;
* `cp+sha256`: the same while hashing: what any content-addressed copy must pay;
* `store local`: `fetch(FileSource(folder), ...)` into `MediaStore` (type check, hash, private
  temporary file, rename);
* `http GET`: aiohttp reading the body in 1 MiB pieces, discarding it: the transport's limit;
* `store http`: `fetch(FileSource("http://..."), ...)`;
* `skip`: `fetch` of the same file again: the quick-skip index, no read (time per file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import asyncio, hashlib, json, os, resource, shutil, sys, time
case, base, rel, work = sys.argv[1:5]
from etl.media.files import FileSource, MediaStore, fetch
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
if case in ("cp", "cp+sha256"):
    src, dst = os.path.join(base, rel), os.path.join(work, "copy.bin")
    baseline = rss(); t = time.perf_counter()
    with open(src, "rb") as f, open(dst, "wb") as g:
        h = hashlib.sha256()
        while block := f.read(1 << 20):
            if case == "cp+sha256": h.update(block)
            g.write(block)
    seconds = time.perf_counter() - t
    os.unlink(dst)
elif case == "http GET":
    import aiohttp
    async def get(url):
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                n = 0
                while block := await r.content.read(1 << 20): n += len(block)
                return n
    from urllib.parse import quote
    url = base + "/" + "/".join(quote(p) for p in rel.split("/"))
    asyncio.run(get(base + "/warm.jpg"))
    baseline = rss(); t = time.perf_counter()
    got = asyncio.run(get(url))
    seconds = time.perf_counter() - t
    assert got == os.path.getsize(os.path.join(work, "..", "files", rel)), got
else:
    store, source = MediaStore(os.path.join(work, "store")), FileSource(base)
    fetch(source, "warm.jpg", store)
    if case == "skip":
        fetch(source, rel, store)
        baseline = rss(); t = time.perf_counter()
        for _ in range(20): located, stored = fetch(source, rel, store)
        seconds = (time.perf_counter() - t) / 20
        assert not stored.copied
    else:
        baseline = rss(); t = time.perf_counter()
        located, stored = fetch(source, rel, store)
        seconds = time.perf_counter() - t
        assert stored.copied
        out["sha256"] = stored.sha256
print(json.dumps({"seconds": seconds, "grew_mb": (rss() - baseline) / 1024,
                  "baseline_mb": baseline / 1024, **out}))
"""

CASES = ["cp", "cp+sha256", "store local", "http GET", "store http", "skip"]


def make_file(folder: Path, mb: int) -> tuple[str, str]:
    from etl.onboarding.sample_files import jpeg_bytes, mp4_header

    rel = "培训/消防演练 录像.mp4"
    path = folder / rel
    path.parent.mkdir(parents=True)
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096
    with open(path, "wb") as f:
        f.write(mp4_header())
        digest.update(mp4_header())
        for _ in range(mb):
            f.write(block)
            digest.update(block)
    (folder / "warm.jpg").write_bytes(jpeg_bytes())
    return rel, digest.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(case: str, base: str, rel: str, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    os.sync()  # the previous case's gigabyte is written back now, not during this one
    out = subprocess.run([sys.executable, "-c", CHILD, case, base, rel, str(work)], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "files"
        rel, sha = make_file(folder, args.mb)
        size = (folder / rel).stat().st_size
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                                   "127.0.0.1", "--directory", str(folder)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            http = f"http://127.0.0.1:{port}"
            results: dict[str, list[dict]] = {c: [] for c in CASES}
            for n in range(args.rounds):  # interleaved and rotated: drift spreads over cases
                for case in CASES[n % len(CASES):] + CASES[:n % len(CASES)]:
                    base = http if case in ("http GET", "store http") else str(folder)
                    r = run_case(case, base, rel, tmp_path / "work")
                    if "sha256" in r and r["sha256"] != sha:
                        raise SystemExit(f"{case}: stored digest differs from the file's")
                    results[case].append(r)
        finally:
            server.terminate()
            server.wait()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{size / 2**20:,.0f} MiB file, {args.rounds} round(s), medians; "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load {load}")
    print()
    print("| case | MB/s (median) | MB/s (slowest–fastest) | seconds | peak RSS growth MB "
          "(largest) | RSS before MB |")
    print("|---|---:|---:|---:|---:|---:|")
    mib = size / 2**20
    for case in CASES:
        times = [r["seconds"] for r in results[case]]
        secs = statistics.median(times)
        grew = max(r["grew_mb"] for r in results[case])
        before = statistics.median(r["baseline_mb"] for r in results[case])
        if case == "skip":
            print(f"| {case} (per file) | — | — | {secs * 1000:.2f} ms | {grew:.1f} | {before:.0f} |")
        else:
            print(f"| {case} | {mib / secs:,.0f} | {mib / max(times):,.0f}–{mib / min(times):,.0f} "
                  f"| {secs:.2f} | {grew:.1f} | {before:.0f} |")


if __name__ == "__main__":
    main()
