"""The shared index (docs/scaling.md): what sharing costs, measured in one run.

    .venv/bin/python bench/scaling.py [--n 200] [--workers 0,1,2] [--snapshots 64]

1. **index cost per snapshot**: the index writes one snapshot takes in a crawl (claimed in a
   batch of 8, its 4 ArchiveResults created started in the batch's transaction, finished,
   their files listed and the snapshot sealed in a batch of 8), `--snapshots` of them, on the
   embedded file vs on the shared DuckLake (catalog in a PostgreSQL started here, data files
   in a temp folder). Same code (store/), same process; the ratio is the added cost.
2. **crawl**: bench/site.py's generated site (`--n` pages, depth 2 from its seeds), plugins
   headers, title and parse_html_urls, `archiveflow add --concurrency 2` on the embedded
   index, then on the shared index with 0, 1, 2 … `archiveflow worker --concurrency 2`
   processes besides it (each its own machine id): pages/s of the `add` (from start to exit,
   Prefect start-up excluded: one Prefect API for every run), and which machine archived how
   many pages (SQL on the process table). On one 2-core machine more workers cannot be faster:
   this shows the overhead of sharing, not the speed-up of a second machine.

Tests never assert times; this prints them, with the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.distributed.pg import PgServer  # noqa: E402


def _bench_site() -> Any:
    """bench/site.py by path: the name `site` is the standard library's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_site", ROOT / "bench" / "site.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_site"] = mod
    spec.loader.exec_module(mod)
    return mod

ARCHIVEFLOW = str(Path(sys.executable).parent / "archiveflow")


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def new_db(pg: PgServer, name: str) -> str:
    subprocess.run(["psql", "-h", str(pg.sock), "-U", pg.user, "-d", "archiveflow", "-q",
                    "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"postgresql://{pg.user}@/{name}?host={pg.sock}"


# --- 1. index cost per snapshot ---------------------------------------------------------------

def index_cost(store: Any, n: int, batch: int = 8) -> float:
    """Seconds per snapshot of the pipeline's index writes for n snapshots."""
    import polars as pl

    from archiveflow.store import crawls, results, snapshots
    from archiveflow.store.ids import new_id
    from archiveflow.store.load import insert_snapshots
    from archiveflow.store.transitions import move

    cur = store.cursor()
    crawl = crawls.create_crawl(cur, seeds="bench")
    crawls.claim_crawl(cur, crawl["id"], 3600)
    insert_snapshots(cur, pl.DataFrame({"url": [f"https://e.test/{i}" for i in range(n)],
                                        "depth": [0] * n}), crawl_id=crawl["id"],
                     username="default")
    hooks = ["headers", "title", "wget", "htmltotext"]
    t0 = time.perf_counter()
    while True:
        claimed = snapshots.claim_snapshots(cur, crawl["id"], limit=batch, lease=600)
        if not claimed:
            break
        with store.transaction() as c:
            rows = [{"id": new_id(), "snapshot_id": s["id"], "plugin": h, "hook_name": h,
                     "output_dir": f"{s['output_dir']}/{h}", "is_background": False}
                    for s in claimed for h in hooks]
            results.create_started(c, rows, lease=600)
        with store.transaction() as c:
            results.finish_results(c, [{"id": r["id"], "status": "succeeded",
                                        "output_str": "ok"} for r in rows])
            results.add_output_files(c, [{"archiveresult_id": r["id"], "path": "out.txt",
                                          "size": 10, "mimetype": "text/plain"} for r in rows])
            move(c, "snapshot", "seal", [s["id"] for s in claimed], returning="id")
    return (time.perf_counter() - t0) / n


def section_index(pg: PgServer, tmp: Path, n: int) -> None:
    from archiveflow.store.db import Store

    (tmp / "embedded").mkdir()
    emb = Store(tmp / "embedded" / "index.duckdb")
    shared = Store(tmp / "shared" / "index.duckdb", catalog=new_db(pg, "bench_index"),
                   storage=tmp / "shared-lake")
    try:
        e = index_cost(emb, n)
        s = index_cost(shared, n)
        e2 = index_cost(emb, n)  # embedded again: how much the load moved in between
    finally:
        emb.close()
        shared.close()
    print(f"| index writes per snapshot | embedded {e * 1000:.1f} ms (again: {e2 * 1000:.1f}) "
          f"| shared {s * 1000:.1f} ms | ×{s / ((e + e2) / 2):.1f} | load {loadavg()} |",
          flush=True)


# --- 2. crawls ----------------------------------------------------------------------------

def _wait_joined(log: Path, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Until the worker claims: joined, and its machine's start-up install run ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"claiming snapshots" in log.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("worker did not join")


def crawl(base: str, seeds: list[str], data: Path, env: dict[str, str], workers: int,
          n: int) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(workers):
            log = data.parent / f"{data.name}-w{k}.log"
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(
                    [ARCHIVEFLOW, "--data-dir", str(data), "worker", "--concurrency", "2",
                     "--poll", "0.5"],
                    env={**env, "ARCHIVEFLOW_MACHINE_ID": f"w{k}",
                         "ARCHIVEFLOW_LIB_DIR": str(data.parent / f"lib-w{k}")},
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            _wait_joined(log, procs[-1])
        t0 = time.perf_counter()
        proc = subprocess.run(
            [ARCHIVEFLOW, "--data-dir", str(data), "add", "--allow-private", "--depth", "2",
             "--plugins", "headers,title,parse_html_urls", "--concurrency", "2", *seeds],
            env={**env, "ARCHIVEFLOW_MACHINE_ID": "origin"}, capture_output=True, text=True,
            timeout=3600)
        wall = time.perf_counter() - t0
        (data.parent / f"{data.name}-add.log").write_text(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"add exited {proc.returncode}: {proc.stderr[-2000:]}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"wall": wall, "split": split(data, env)}


def split(data: Path, env: dict[str, str]) -> dict[str, int]:
    """Pages archived per machine (from the process rows)."""
    from archiveflow.store.db import Store

    store = Store(data / "index.duckdb", catalog=env.get("ARCHIVEFLOW_CATALOG") or "",
                  storage=env.get("ARCHIVEFLOW_STORAGE"), read_only=True)
    try:
        rows = store.cursor().execute(
            "SELECT coalesce(p.machine_id, '?'), count(DISTINCT a.snapshot_id) FROM process p "
            "JOIN archiveresult a ON a.id = p.owner_id WHERE p.owner_type = 'archiveresult' "
            "GROUP BY ALL ORDER BY 1").fetchall()
        return {str(m): int(c) for m, c in rows}
    finally:
        store.close()


def section_crawls(pg: PgServer, tmp: Path, n: int, worker_counts: list[int],
                   skip_embedded: bool = False) -> None:
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    bench_site = _bench_site()
    site = bench_site.generate(n)
    with bench_site.Server(site) as srv, prefect_test_harness(server_startup_timeout=180):
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVEFLOW_")}
        base_env.update(PREFECT_API_URL=str(get_current_settings().api.url),
                        PREFECT_LOGGING_LEVEL="WARNING")
        seeds = site.seed_urls(srv.base)
        runs: list[tuple[str, dict[str, str], int]] = [] if skip_embedded else [
            ("embedded", {}, 0)]
        for k in worker_counts:
            runs.append((f"shared, add + {k} worker(s)", {
                "ARCHIVEFLOW_CATALOG": new_db(pg, f"bench_crawl_{k}"),
                "ARCHIVEFLOW_STORAGE": str(tmp / f"lake-{k}")}, k))
        first = None
        for label, extra, k in runs:
            data = tmp / f"data-{label.split(',')[0]}-{k}"
            try:
                res = crawl(srv.base, seeds, data, {**base_env, **extra}, k, n)
            except RuntimeError as e:  # one failed crawl does not hide the others' numbers
                print(f"| crawl {n} pages | {label} | FAILED: {str(e).splitlines()[-1][:200]}"
                      f" (stderr: {data.parent / (data.name + '-add.log')}) |", flush=True)
                continue
            pps = n / res["wall"]
            first = first or pps
            print(f"| crawl {n} pages | {label} | {res['wall']:.1f} s | {pps:.2f} pages/s | "
                  f"×{pps / first:.2f} of embedded | per machine {res['split']} | "
                  f"load {loadavg()} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="pages of the generated site")
    ap.add_argument("--workers", default="0,1,2",
                    help="worker counts besides the crawl's own process (comma-separated)")
    ap.add_argument("--snapshots", type=int, default=64, help="snapshots of the index section")
    ap.add_argument("--sections", default="index,crawl")
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded crawl")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (debugging)")
    ns = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="af-bench-scaling-"))
    pg = PgServer()
    pg.init()
    print(f"cores {os.cpu_count()}, load {loadavg()}", flush=True)
    try:
        if "index" in ns.sections:
            section_index(pg, tmp, ns.snapshots)
        if "crawl" in ns.sections:
            section_crawls(pg, tmp, ns.n, [int(x) for x in ns.workers.split(",") if x],
                           ns.no_embedded)
    finally:
        if ns.keep:
            print(f"kept {tmp} (PostgreSQL stopped: its data is in {pg.data})", flush=True)
            pg.stop()
        else:
            pg.remove()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
