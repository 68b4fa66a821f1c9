"""Import bench (issue 14): large seed inputs and a hook printing many records.

    .venv/bin/python bench/import.py      # 200k + 2M lines, 100k bookmarks, 1M records
    .venv/bin/python bench/import.py --lines 200000 --bookmarks 0 --records 0

For each input, `archiveflow add --index-only FILE` (the installed command) into a fresh data
folder, as a user runs it:

- **rate**: Snapshots created / wall time of the command (start-up and the seed parser
  included), and the number of Snapshots against the number of valid lines (must be equal);
- **peak RSS** of the importing process and of the seed parser hook, sampled every 0.1 s
  (psutil), and the larger of the two from wait4 (the kernel's own maximum);
- inputs: a text file of N URL lines (~60 bytes each, 1 in 50,000 lines deliberately bad,
  ~1,000 hosts) and a Netscape bookmarks file of N entries in nested folders, with ADD_DATE
  and TAGS.

**Records from one hook**: the `manytags` test hook (tests/cli/plugins) prints N distinct Tag
records for one Snapshot; run with the pipeline's own pieces (run_hook, update_from_output,
ingest_outcomes in one transaction, as the Recorder does) against the previous design in the
same run: the whole output parsed into one list and handed to process_hook_records at once.
Each design runs in a process of its own; its peak RSS is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
ARCHIVEFLOW = str(Path(sys.executable).with_name("archiveflow"))
BAD_EVERY = 50_000
BAD = ["not a url", "ftp://example.com/file.txt", "http://127.0.0.1/private"]


def write_txt(path: Path, n: int) -> int:
    """N URL lines (plus bad ones); returns how many valid distinct URLs it holds."""
    with path.open("w") as f:
        for i in range(n):
            if i % BAD_EVERY == 0:
                f.write("\n".join(BAD) + "\n")
            f.write(f"https://site{i % 997}.example.com/articles/{i}/page.html?ref={i % 13}\n")
    return n


def write_bookmarks(path: Path, n: int) -> int:
    """A Netscape bookmarks export of N entries in folders of 1,000; returns N."""
    with path.open("w") as f:
        f.write("<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<TITLE>Bookmarks</TITLE>\n<DL><p>\n")
        for i in range(n):
            if i % 1000 == 0:
                if i:
                    f.write("</DL><p>\n")
                f.write(f'<DT><H3 ADD_DATE="1700000000">Folder {i // 1000}</H3>\n<DL><p>\n')
            f.write(f'<DT><A HREF="https://book{i % 991}.example.org/post/{i}" '
                    f'ADD_DATE="{1600000000 + i}" TAGS="t{i % 7},reading">Bookmark &amp; '
                    f'title {i}</A>\n')
        f.write("</DL><p>\n</DL><p>\n")
    return n


def run_import(data: Path, source: Path) -> dict[str, Any]:
    """`archiveflow add --index-only SOURCE`: wall time, snapshots, peak RSS (main, hook)."""
    t0 = time.monotonic()
    with open(data.with_name("import.err"), "w") as err:
        proc = subprocess.Popen([ARCHIVEFLOW, "--data-dir", str(data), "add", "--index-only",
                                 str(source)], stdout=subprocess.DEVNULL, stderr=err)
        main = psutil.Process(proc.pid)
        peak_main = peak_child = 0
        while True:
            try:
                peak_main = max(peak_main, main.memory_info().rss)
                for c in main.children(recursive=True):
                    try:
                        peak_child = max(peak_child, c.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    import duckdb

    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM snapshot").fetchone()
        snaps = int(row[0]) if row else 0
    finally:
        con.close()
    return {"exit": proc.returncode, "wall": wall, "snapshots": snaps,
            "rss_main": peak_main >> 20, "rss_hook": peak_child >> 20,
            "rss_wait4": usage.ru_maxrss >> 10}


def bench_records(n: int, work: Path) -> dict[str, Any]:
    """One hook printing n Tag records: streamed (ours) against one list (the old way),
    each design in a process of its own (its peak RSS is its own)."""
    out: dict[str, Any] = {}
    for design in ("streamed", "one list"):
        proc = subprocess.run([sys.executable, __file__, "--records-run", str(n), "--design",
                               design, "--work", str(work)], capture_output=True, text=True,
                              check=True)
        out[design] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def records_run(n: int, design: str, work: Path) -> dict[str, Any]:
    """Run the manytags hook once and load its records (see bench_records)."""
    import polars as pl

    from archiveflow.store import crawls, load
    from archiveflow.store.records import parse_lines
    from archiveflow.tasks.discover import parse_hook_name
    from archiveflow.tasks.hooks import run_hook, update_from_output
    from archiveflow.tasks.ingest import Context, ingest_outcomes, process_hook_records
    from archiveflow.tasks.output import record_text
    from archiveflow.tasks.runtime import open_runtime

    hook = parse_hook_name(ROOT / "tests/cli/plugins/manytags/on_Snapshot__50_manytags.py")
    assert hook is not None
    data = work / f"records-{design.replace(' ', '-')}"
    rt = open_runtime(data)
    try:
        with rt.store.transaction() as cur:
            crawl = crawls.create_crawl(cur, seeds="https://example.com/")
            ((sid, _url),) = load.insert_snapshots(
                cur, pl.DataFrame({"url": ["https://example.com/"], "depth": [0]}),
                crawl_id=crawl["id"], username="default")
        ctx = Context(crawl=crawl, snapshot={"id": sid, "depth": 0})
        snap = data / "snap"
        t0 = time.monotonic()
        run = run_hook(hook, args={}, output_dir=snap, timeout=3600,
                       env={**os.environ, "MANYTAGS_COUNT": str(n)})
        t1 = time.monotonic()
        if design == "streamed":
            outcome = update_from_output(run, output_dir=snap, snapshot_dir=snap)
            t2 = time.monotonic()
            with rt.store.transaction() as cur:
                rep = ingest_outcomes(cur, [outcome], ctx)
        else:
            records, _errors = parse_lines(record_text(run.paths))
            t2 = time.monotonic()
            with rt.store.transaction() as cur:
                rep = process_hook_records(cur, records, ctx)
        t3 = time.monotonic()
    finally:
        rt.close()
    import resource

    return {"hook": t1 - t0, "read": t2 - t1, "load": t3 - t2, "total": t3 - t0,
            "loaded": rep.counts.get("Tag", 0),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, nargs="*", default=[200_000, 2_000_000])
    p.add_argument("--bookmarks", type=int, default=100_000)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--records-run", type=int, help=argparse.SUPPRESS)
    p.add_argument("--design", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.records_run:
        print(json.dumps(records_run(args.records_run, args.design, Path(args.work))))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    print(f"load average at start: {os.getloadavg()}")
    try:
        inputs: list[tuple[str, Path, int]] = []
        for n in args.lines:
            path = work / f"urls-{n}.txt"
            inputs.append((f"txt {n:,} lines", path, write_txt(path, n)))
        if args.bookmarks:
            path = work / f"bookmarks-{args.bookmarks}.html"
            inputs.append((f"bookmarks {args.bookmarks:,}", path,
                           write_bookmarks(path, args.bookmarks)))
        print("| input | exit | snapshots / valid | wall | URLs/s | peak RSS add | peak RSS "
              "seeds hook | wait4 max |")
        print("|---|---|---|---|---|---|---|---|")
        for name, path, valid in inputs:
            data = work / f"data-{path.stem}"
            r = run_import(data, path)
            print(f"| {name} ({path.stat().st_size / 1e6:.0f} MB) | {r['exit']} | "
                  f"{r['snapshots']:,} / {valid:,} | {r['wall']:.1f} s | "
                  f"{r['snapshots'] / r['wall']:,.0f} | {r['rss_main']} MB | "
                  f"{r['rss_hook']} MB | {r['rss_wait4']} MB |", flush=True)
            shutil.rmtree(data, ignore_errors=True)
        if args.records:
            rec = bench_records(args.records, work)
            print(f"\nrecords from one hook ({args.records:,} Tag records), load average "
                  f"{os.getloadavg()[0]:.1f}:")
            print("| design | hook | read | load | total | records/s (read+load) | loaded | "
                  "peak RSS |")
            print("|---|---|---|---|---|---|---|---|")
            for design, r in rec.items():
                rate = r["loaded"] / max(1e-9, r["read"] + r["load"])
                print(f"| {design} | {r['hook']:.1f} s | {r['read']:.1f} s | {r['load']:.1f} s"
                      f" | {r['total']:.1f} s | {rate:,.0f} | {r['loaded']:,} | "
                      f"{r['rss_mb']} MB |")
        print(f"load average at end: {os.getloadavg()}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
