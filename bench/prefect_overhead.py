"""What Prefect costs archiveflow, measured against floors taken in the same run.

    .venv/bin/python bench/prefect_overhead.py [--n 200] [--k 5] [--conc 2]
        [--sections ABC] [--variants i,ii,iii,iv]

A: start-up, each in a fresh Python process (what a CLI command pays):
   cold (fresh data dir, no template), cold with the pre-migrated DB template, warm
   (server already running): time to configure_prefect, to the first flow run finished,
   and to the first hook process started when Prefect comes up in the background.
B: per-run costs in-process against the local server: nested async subflow, task run,
   sequential and 4 at once, and how long the server takes to *record* the task runs.
C: a crawl of N snapshots x K no-op hooks (~25 ms python processes), `--conc` snapshots at
   once, per granularity, against spawning the same processes directly (the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiveflow.flows.prefect_server import configure_prefect, stop_local_server  # noqa: E402

PY = sys.executable
HOOK = [
    PY,
    "-c",
    "import json; print(json.dumps({'type': 'ArchiveResult', 'status': 'noresults'}))",
]

CHILD = r"""
import sys, time, json, subprocess
t0 = float(sys.argv[2]); data = sys.argv[1]; bg = sys.argv[3] == "bg"
sys.path.insert(0, %(root)r)
from archiveflow.flows import prefect_server as runtime
out = {}
hook = %(hook)r
if bg:
    fut = runtime.start_in_background(data)
    p = subprocess.Popen(hook, stdout=subprocess.DEVNULL)   # the first hook, right away
    out["first_hook"] = time.time() - t0
    p.wait()
    rt = fut.result()
else:
    rt = runtime.configure_prefect(data)
out["configured"] = time.time() - t0; out["mode"] = rt.mode
import asyncio
import contextlib
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
@task(cache_policy=NO_CACHE)
async def hook_task(): return 0
@flow
async def crawl(): await hook_task()
if not bg: out["imported"] = time.time() - t0
asyncio.run(crawl())
if not bg: out["first_hook"] = time.time() - t0   # a hook spawned inside the first task
out["flow_done"] = time.time() - t0
print(json.dumps(out), flush=True)
"""


def run_child(data: Path, bg: bool, env: dict[str, str]) -> dict:
    script = CHILD % {"root": str(ROOT), "hook": HOOK}
    t0 = time.time()
    r = subprocess.run(
        [PY, "-c", script, str(data), repr(t0), "bg" if bg else "fg"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_startup(tmp: Path) -> list[tuple[str, dict]]:
    rows = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # no template yet
    d1 = tmp / "cold"
    rows.append(("cold, no template, fg", run_child(d1, False, env)))
    rows.append(("warm, fg", run_child(d1, False, env)))
    rows.append(("warm, bg", run_child(d1, True, env)))
    stop_local_server(d1)
    rows.append(("restart existing DB, fg", run_child(d1, False, env)))
    stop_local_server(d1)
    d2 = tmp / "cold_tpl"
    rows.append(("cold, template, fg", run_child(d2, False, env)))
    stop_local_server(d2)
    d3 = tmp / "cold_tpl_bg"
    rows.append(("cold, template, bg", run_child(d3, True, env)))
    stop_local_server(d3)
    return rows


async def _spawn_hook() -> int:
    p = await asyncio.create_subprocess_exec(*HOOK, stdout=asyncio.subprocess.PIPE)
    await p.communicate()
    return p.returncode or 0


def _recorded(api: str, tag: str) -> int:
    import httpx

    body = {"task_runs": {"tags": {"all_": [tag]}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    return httpx.post(f"{api}/task_runs/count", json=body, timeout=30).json()


def wait_recorded(api: str, tag: str, expected: int, t_end: float, limit: float = 900) -> float:
    """Seconds after t_end until the server has recorded `expected` completed task runs."""
    while _recorded(api, tag) < expected:
        if time.perf_counter() - t_end > limit:
            return float("nan")
        time.sleep(0.2)
    return time.perf_counter() - t_end


def bench_per_run(api: str, n: int) -> list[tuple[str, float, float]]:
    from prefect import flow, tags, task
    from prefect.cache_policies import NO_CACHE

    @task(cache_policy=NO_CACHE)
    async def noop_task() -> int:
        return 0

    @flow
    async def noop_sub() -> int:
        return 0

    async def gather_n(fn, count: int, conc: int) -> None:
        sem = asyncio.Semaphore(conc)

        async def one():
            async with sem:
                await fn()

        await asyncio.gather(*(one() for _ in range(count)))

    rows = []
    for label, fn, count in (("subflow", noop_sub, max(n // 4, 10)), ("task run", noop_task, n)):
        for conc in (1, 4):
            tag = f"b-{uuid.uuid4().hex[:8]}"

            @flow(name=f"per-run-{label}-{conc}")
            async def parent() -> None:
                with tags(tag):  # noqa: B023 - called within the iteration
                    await gather_n(fn, count, conc)  # noqa: B023

            t = time.perf_counter()
            asyncio.run(parent())
            t_end = time.perf_counter()
            lag = wait_recorded(api, tag, count, t_end) if fn is noop_task else 0.0
            rows.append(
                (
                    f"{label}, {conc} at once",
                    (t_end - t) / count * 1000,
                    (t_end - t + lag) / count * 1000,
                )
            )

    @flow
    def sync_sub() -> int:
        return 0

    @flow
    def sync_parent(count: int) -> None:
        for _ in range(count):
            sync_sub()

    from archiveflow.flows.prefect_server import no_heartbeats

    count = max(n // 20, 5)
    for label, ctx in (
        ("heartbeats on", contextlib.nullcontext),
        ("heartbeats off", no_heartbeats),
    ):
        with ctx():
            t = time.perf_counter()
            sync_parent(count)
            ms = (time.perf_counter() - t) / count * 1000
        rows.append((f"sync subflow, {label}", ms, ms))
    return rows


def bench_granularity(
    api: str, n: int, k: int, conc: int, only: set[str]
) -> list[tuple[str, float, float]]:
    from prefect import flow, tags, task
    from prefect.cache_policies import NO_CACHE

    async def workers(body) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker():
            while not queue.empty():
                await body(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(conc)))

    @task(cache_policy=NO_CACHE)
    async def hook_task(i: int, h: int) -> int:
        return await _spawn_hook()

    @task(cache_policy=NO_CACHE)
    async def snapshot_task(i: int) -> int:
        return sum([await _spawn_hook() for _ in range(k)])

    @flow
    async def snapshot_flow(i: int) -> int:
        return sum([await hook_task(i, h) for h in range(k)])

    @flow
    async def snapshot_flow_notasks(i: int) -> int:
        return sum([await _spawn_hook() for _ in range(k)])

    async def floor_body(i: int) -> None:
        for _ in range(k):
            await _spawn_hook()

    async def task_body(i: int) -> None:
        for h in range(k):
            await hook_task(i, h)

    async def snap_task_body(i: int) -> None:
        await snapshot_task(i)

    async def subflow_body(i: int) -> None:
        await snapshot_flow(i)

    async def subflow_nt_body(i: int) -> None:
        await snapshot_flow_notasks(i)

    def floor() -> float:
        t = time.perf_counter()
        asyncio.run(workers(floor_body))
        return time.perf_counter() - t

    before = floor()
    rows = [("floor: spawn directly (before)", before, before)]
    variants = tuple(
        v
        for v in (
            ("(i) task per ArchiveResult", task_body, n * k),
            ("(ii) task per Snapshot", snap_task_body, n),
            ("(iii) subflow per Snapshot + tasks", subflow_body, n * k),
            ("(iv) subflow per Snapshot, no tasks", subflow_nt_body, 0),
        )
        if v[0].split()[0].strip("()") in only
    )
    for label, body, expected in variants:
        tag = f"g-{uuid.uuid4().hex[:8]}"

        @flow(name="crawl")
        async def crawl() -> None:
            with tags(tag):  # noqa: B023 - called within the iteration
                await workers(body)  # noqa: B023

        t = time.perf_counter()
        asyncio.run(crawl())
        t_end = time.perf_counter()
        lag = wait_recorded(api, tag, expected, t_end) if expected else 0.0
        rows.append((label, t_end - t, t_end - t + lag))
    after = floor()
    rows.append(("floor: spawn directly (after)", after, after))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="snapshots in the crawl (C), runs in B")
    ap.add_argument("--k", type=int, default=5, help="hooks per snapshot")
    ap.add_argument("--conc", type=int, default=2, help="snapshots at once")
    ap.add_argument("--sections", default="ABC", help="which of A, B, C to run")
    ap.add_argument("--variants", default="i,ii,iii,iv", help="granularities for C")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} cores={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.1f} n={args.n} k={args.k} conc={args.conc}"
    )
    with tempfile.TemporaryDirectory(prefix="af-prefect-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if "A" in args.sections:
            print("\nA. start-up in a fresh process (s since the process was spawned)", flush=True)
            print(
                f"{'case':28} {'mode':14} {'configured':>10} {'1st hook':>9} {'1st flow':>9}",
                flush=True,
            )
            for label, r in bench_startup(tmp):
                print(
                    f"{label:28} {r['mode']:14} {r['configured']:10.2f} {r['first_hook']:9.2f} "
                    f"{r['flow_done']:9.2f}"
                )
        for k in [k for k in os.environ if k.startswith("PREFECT_")]:
            del os.environ[k]
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"  # keep the console to the table
        rt = configure_prefect(tmp / "inproc")
        try:
            if "B" in args.sections:
                print(
                    f"\nB. per run, in-process, local server ({rt.mode}, {rt.seconds:.1f} s)",
                    flush=True,
                )
                print(f"{'run':24} {'ms client':>10} {'ms recorded':>12}", flush=True)
                for label, client_ms, rec_ms in bench_per_run(rt.api_url, args.n):
                    print(f"{label:24} {client_ms:10.1f} {rec_ms:12.1f}", flush=True)
            if "C" in args.sections:
                print(
                    f"\nC. crawl {args.n} snapshots x {args.k} no-op hooks, {args.conc} at once",
                    flush=True,
                )
                print(f"{'granularity':38} {'s done':>7} {'x floor':>8} {'s recorded':>11} "
                      f"{'x floor':>8}   (x floor: against the mean of both floors)")  # fmt: skip
                only = set(args.variants.split(","))
                rows = bench_granularity(rt.api_url, args.n, args.k, args.conc, only)
                floor = (rows[0][1] + rows[-1][1]) / 2
                for label, done, rec in rows:
                    print(f"{label:38} {done:7.1f} {done / floor:8.2f} {rec:11.1f} "
                          f"{rec / floor:8.2f}")  # fmt: skip
        finally:
            stop_local_server(tmp / "inproc")


if __name__ == "__main__":
    main()
