"""archiveflow benchmarks: every figure as a ratio against a baseline measured in the same run.

    .venv/bin/python bench/run.py                    # = make bench (full: N=1000, K=5)
    .venv/bin/python bench/run.py --quick            # N=100, smaller scale points
    .venv/bin/python bench/run.py --sections ingest,startup
    .venv/bin/python bench/run.py --sections scale --scale   # adds N=100k no-op snapshots

Sections (see bench/README.md for what each compares and the latest numbers):
  overhead  crawl of N snapshots x K no-op hooks vs spawning the same N*K processes directly
  startup   `archiveflow add URL` -> first on_Crawl / on_Snapshot hook, cold and warm
  ingest    Snapshot JSONL through store/load.py vs executemany of the same rows
  crawl     the generated site at depth 2 with wget, favicon, htmltotext, parse_html_urls vs
            the same hooks spawned directly, wget -r -l 2, and abx-dl (bench/abx.py)
  scale     N=1k vs 10k no-op snapshots (K=1): time per snapshot, orchestrator peak RSS

Each row prints as soon as it is measured; the table goes to bench/out/latest.md.
Crawls run in a child process (`bench/run.py _crawl ...`) so its RSS can be sampled apart
from the Prefect server's; the child times create_crawl -> crawl sealed, after its Prefect
client is configured (server start-up is the startup section's business).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
WORK = OUT / "work"
NOOP_PLUGINS = BENCH / "noop" / "plugins"
STAMP_PLUGINS = BENCH / "noop" / "startup"
CLI = Path(sys.executable).parent / "archiveflow"
REAL_PLUGINS = "wget,favicon,htmltotext,parse_html_urls"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("ingest", "startup", "overhead", "crawl", "scale")


# --- the table ------------------------------------------------------------------------------

@dataclass
class Row:
    section: str
    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    ok: bool | None
    note: str = ""


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    loads: list[str] = field(default_factory=list)
    argv: str = ""

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        verdict = {True: "pass", False: "FAIL", None: "-"}[row.ok]
        print(f"| {row.section} | {row.name} | {row.ours} | {row.baseline} | {ratio} | "
              f"{row.target} | {verdict} |" + (f" {row.note}" if row.note else ""), flush=True)
        self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)
        self.write()

    def markdown(self) -> str:
        lines = [
            f"# archiveflow bench: {self.started}",
            "",
            f"`{self.argv}`  ",
            f"machine: {machine()}  ",
            "load average (1/5/15 min) at each section start: " + "; ".join(self.loads),
            "",
            "| section | figure | ours | baseline | ratio | target | result |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
            verdict = {True: "pass", False: "**FAIL**", None: "-"}[r.ok]
            name = r.name + (f" ({r.note})" if r.note else "")
            lines.append(f"| {r.section} | {name} | {r.ours} | {r.baseline} | {ratio} | "
                         f"{r.target} | {verdict} |")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "latest.md").write_text(self.markdown(), encoding="utf-8")


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    import duckdb

    try:
        from importlib.metadata import version
        pv = version("prefect")
    except Exception:  # noqa: BLE001
        pv = "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}, {os.cpu_count()} cores, {mem:.0f} GiB, "
            f"Python {platform.python_version()}, prefect {pv}, duckdb {duckdb.__version__}")


def fmt_s(x: float) -> str:
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


# --- helpers: clean environment, fresh folders, RSS sampling -------------------------------

def child_env(**extra: str) -> dict[str, str]:
    """Our environment without a Prefect API URL a configure_prefect() may have left."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "_ARCHIVEFLOW_LOCAL_API_URL")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def fresh_dir(name: str) -> Path:
    d = WORK / name
    stop_server(d)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def stop_server(data_dir: Path) -> None:
    """Stop the Prefect server a crawl started for this data dir (never someone else's)."""
    if not (data_dir / "prefect").exists():
        return
    from archiveflow.flows.prefect_server import stop_local_server

    try:
        stop_local_server(data_dir)
    except Exception as e:  # noqa: BLE001 - cleanup must go on
        print(f"  could not stop the Prefect server of {data_dir}: {e}", flush=True)


def server_pid(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "prefect" / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


class RssSampler:
    """Peak RSS of one process (not its children) and of the data dir's Prefect server."""

    def __init__(self, pid: int, data_dir: Path, every: float = 0.2) -> None:
        self.pid, self.data_dir, self.every = pid, data_dir, every
        self.peak = 0
        self.server_peak = 0
        self.server_cpu = 0.0  # the server's user+system seconds while sampled
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        server = None
        cpu0: float | None = None
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc.memory_info().rss)
            except psutil.Error:
                return
            if server is None and (spid := server_pid(self.data_dir)):
                try:
                    server = psutil.Process(spid)
                except psutil.Error:
                    server = None
            if server is not None:
                try:
                    self.server_peak = max(self.server_peak, server.memory_info().rss)
                    t = server.cpu_times()
                    cpu = t.user + t.system
                    cpu0 = cpu if cpu0 is None else cpu0
                    self.server_cpu = cpu - cpu0
                except psutil.Error:
                    server = None
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# --- the crawl child ----------------------------------------------------------------------

def child_crawl(ns: argparse.Namespace) -> None:
    """In a fresh process: configure Prefect, then time one crawl (create -> sealed)."""
    if ns.granularity != "none":  # "none" is this bench's own: no Prefect at all
        os.environ["ARCHIVEFLOW_PREFECT_GRANULARITY"] = ns.granularity
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from archiveflow.cli.crawl import run_crawl
    from archiveflow.flows.prefect_server import configure_prefect
    from archiveflow.store.crawls import create_crawl
    from archiveflow.tasks.runtime import open_runtime

    data = Path(ns.data)
    t = time.perf_counter()
    rt = open_runtime(data)
    if ns.granularity != "none":
        configure_prefect(data)
        import archiveflow.flows.crawl  # noqa: F401 - the flow engine import, off the timed path
    setup = time.perf_counter() - t
    config = {"URL_ALLOW_PRIVATE": "true"}
    if ns.plugins_path:
        config["PLUGINS_PATH"] = ns.plugins_path
    for kv in ns.config or []:
        k, v = kv.split("=", 1)
        config[k] = v
    seeds = Path(ns.seeds).read_text(encoding="utf-8")
    server = _server_process(data) if ns.granularity != "none" else None
    s0 = _cpu_of(server)
    c0 = os.times()
    t0 = time.perf_counter()
    crawl = create_crawl(rt.store.cursor(), seeds=seeds, max_depth=ns.depth, plugins=ns.plugins,
                         config=config, machine_id=rt.machine.id)
    if ns.granularity == "none":
        result = plain_crawl(rt, crawl["id"], ns.concurrency)
    else:
        result = run_crawl(rt, crawl["id"], ns.concurrency)
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)  # this process only, not the hooks
    # The hooks (and what they ran: wget), reaped by this process during the crawl.
    hooks_cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    # The server's CPU over the same span (the parent's sampler also counts the server's own
    # start-up when this child started it: 5-10 s of CPU, i.e. tens of ms per page).
    s1 = _cpu_of(server)
    server_cpu = s1 - s0 if s0 is not None and s1 is not None else None
    cur = rt.store.cursor()
    snaps = cur.execute("SELECT count(*) FILTER (WHERE status = 'sealed'), count(*) "
                        "FROM snapshot WHERE crawl_id = ?", [crawl["id"]]).fetchone()
    res = dict(cur.execute(
        "SELECT a.status, count(*) FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id "
        "WHERE s.crawl_id = ? GROUP BY ALL", [crawl["id"]]).fetchall())
    rt.close()
    print("BENCH-RESULT " + json.dumps({
        "wall": wall, "setup": setup, "cpu": cpu, "server_cpu_crawl": server_cpu,
        "hooks_cpu": hooks_cpu,
        "sealed": snaps[0], "snapshots": snaps[1],
        "results": res, "status": result.get("status"), "failures": result.get("failures"),
    }), flush=True)


def _children_cpu() -> float:
    """user + system seconds of this process's reaped children so far."""
    t = os.times()
    return t.children_user + t.children_system


def _server_process(data: Path) -> Any:
    import psutil

    pid = server_pid(data)
    try:
        return psutil.Process(pid) if pid else None
    except psutil.Error:
        return None


def _cpu_of(proc: Any) -> float | None:
    """user + system seconds of a process (None if unknown or gone)."""
    import psutil

    try:
        t = proc.cpu_times() if proc is not None else None
    except psutil.Error:
        return None
    return t.user + t.system if t is not None else None


def plain_crawl(rt: Any, crawl_id: str, concurrency: int) -> dict[str, Any]:
    """The crawl flow's loop without Prefect (diagnostic): the same model-module calls
    (tasks/crawls.py, tasks/snapshots.py), C snapshots at once in threads, claiming as slots
    free up (no polling sleep)."""
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    from archiveflow.flows import context
    from archiveflow.tasks import crawls, snapshots
    from archiveflow.tasks.feed import SnapshotFeed

    cur = context.install(rt)
    try:
        start = crawls.run(rt, crawls.claim(rt, crawl_id))
        feed = SnapshotFeed(rt, cur.recorder, start.crawl, concurrency)
        running: set[Future[Any]] = set()
        with ThreadPoolExecutor(concurrency) as ex:
            while True:
                for plan in feed.take(concurrency - len(running), not running):
                    running.add(ex.submit(snapshots.run, rt, cur.recorder, plan, wait=False))
                if not running:
                    if feed.done():
                        break
                    time.sleep(0.05)
                    continue
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()
        crawls.cleanup(rt, start)
        sealed = crawls.seal(rt, start.crawl)
        return {"status": sealed["status"], "failures": start.failures}
    finally:
        context.uninstall()


def run_crawl_child(data: Path, seeds: Sequence[str], *, depth: int, plugins: str,
                    plugins_path: Path | None, concurrency: int, granularity: str = "snapshot",
                    profile: Path | None = None, timeout: float = 7200,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run child_crawl in a subprocess, sampling its RSS; returns its result + peaks."""
    seeds_file = data.parent / f"{data.name}-seeds-{len(seeds)}.txt"
    seeds_file.write_text("\n".join(seeds) + "\n", encoding="utf-8")
    cmd = [sys.executable, str(Path(__file__).resolve()), "_crawl", "--data", str(data),
           "--seeds", str(seeds_file), "--depth", str(depth), "--plugins", plugins,
           "--concurrency", str(concurrency), "--granularity", granularity]
    if plugins_path:
        cmd += ["--plugins-path", str(plugins_path)]
    if profile is not None:
        spy = Path(sys.executable).parent / "py-spy"
        cmd = [str(spy), "record", "--format", "raw", "--rate", "50", "--nonblocking",
               "-o", str(profile), "--", *cmd]
    log = data.parent / f"{data.name}-child.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                env=child_env(**(env or {})), cwd=ROOT)
        pid = proc.pid
        if profile is not None:  # sample the python child, not py-spy
            import psutil
            for _ in range(100):
                kids = psutil.Process(proc.pid).children()
                if kids:
                    pid = kids[0].pid
                    break
                time.sleep(0.05)
        with RssSampler(pid, data) as rss:
            out, _ = proc.communicate(timeout=timeout)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH-RESULT "):
            res = json.loads(line.split(" ", 1)[1])
            res.update(peak_rss=rss.peak, server_rss=rss.server_peak, server_cpu=rss.server_cpu)
            return res
    raise RuntimeError(f"crawl child failed (exit {proc.returncode}); see {log}")


# --- the floor: the same hook processes, spawned directly ---------------------------------

def hook_setup(plugins: str, plugins_path: Path | None) -> tuple[list[Any], dict[str, str]]:
    """The Snapshot hooks and base hook environment archiveflow would use (scratch index)."""
    from archiveflow.tasks.runtime import open_runtime

    scratch = fresh_dir("floor-runtime")
    rt = open_runtime(scratch, env=child_env())
    try:
        cfg = rt.config({"PLUGINS_PATH": str(plugins_path)} if plugins_path else {})
        hooks = rt.hooks("Snapshot", cfg, plugins.split(","))
        env = rt.hook_env(cfg)
    finally:
        rt.close()
    return hooks, env


def spawn_floor(urls: Sequence[str], hooks: Sequence[Any], env: dict[str, str],
                concurrency: int, out_dir: Path, timeout: float = 120) -> float:
    """Each URL's hooks in order (like a snapshot's foreground hooks), C URLs at once, with
    subprocess.run: same interpreter, argv and environment shape as run_hook. Seconds."""
    from archiveflow.tasks.discover import build_command

    shutil.rmtree(out_dir, ignore_errors=True)
    commands = [build_command(h.path) for h in hooks]

    def one(item: tuple[int, str]) -> None:
        i, url = item
        snap = out_dir / f"s{i}"
        for hook, cmd in zip(hooks, commands, strict=True):
            d = snap / hook.plugin
            d.mkdir(parents=True, exist_ok=True)
            argv = [*cmd, f"--url={url}", f"--snapshot-id=s{i}", "--crawl-id=floor", "--depth=0"]
            hook_env = {**env, "SNAP_DIR": str(snap), "EXTRA_CONTEXT": json.dumps(
                {"plugin": hook.plugin, "hook_name": hook.name, "snapshot_id": f"s{i}"})}
            with open(d / "stdout.log", "wb") as o, open(d / "stderr.log", "wb") as e:
                subprocess.run(argv, cwd=d, env=hook_env, stdout=o, stderr=e,
                               start_new_session=True, timeout=timeout, check=False)

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, enumerate(urls)))
    return time.perf_counter() - t


# --- sections -----------------------------------------------------------------------------

def section_ingest(tab: Table, ns: argparse.Namespace) -> None:
    import polars as pl  # noqa: F401 - imported before timing

    from archiveflow.store.db import Store
    from archiveflow.store.ids import new_id
    from archiveflow.store.load import load_snapshot_jsonl

    n, m = ns.ingest_n, ns.ingest_rows
    lines = [json.dumps({"type": "Snapshot", "url": f"https://example.com/a/{i}?q={i * 7}",
                         "depth": i % 3, "title": f"page {i}"}) for i in range(n)]
    d = fresh_dir("ingest")
    bulk = Store(d / "bulk.duckdb")
    try:
        with bulk.transaction() as cur:  # warm-up: first statement, plan cache
            load_snapshot_jsonl(cur, lines[:100], crawl_id="warm")
        t = time.perf_counter()
        with bulk.transaction() as cur:
            rep = load_snapshot_jsonl(cur, lines, crawl_id="bench")
        bulk_s = time.perf_counter() - t
        assert rep.inserted.get("snapshot") == n, rep.inserted
    finally:
        bulk.close()
    rows_store = Store(d / "rows.duckdb")
    try:
        cur = rows_store.cursor()
        t = time.perf_counter()
        rows = []
        for ln in lines[:m]:  # the same work per record: parse, id, folder, insert
            rec = json.loads(ln)
            sid = new_id()
            rows.append((sid, "bench", rec["url"], f"users/default/snapshots/x/example.com/{sid}",
                         rec["depth"], rec["title"]))
        cur.executemany("INSERT INTO snapshot (id, crawl_id, url, output_dir, depth, title) "
                        "VALUES (?, ?, ?, ?, ?, ?)", rows)
        rows_s = time.perf_counter() - t
        got = cur.execute("SELECT count(*) FROM snapshot").fetchone()[0]
        assert got == m, got
    finally:
        rows_store.close()
    ours, base = n / bulk_s, m / rows_s
    tab.add(Row("ingest", f"Snapshot JSONL -> DuckDB, records/s ({n:,} bulk; {m:,} per-row)",
                f"{ours:,.0f}/s ({bulk_s:.2f} s)", f"{base:,.0f}/s executemany "
                f"({rows_s / m * 1e3:.2f} ms/row)", ours / base, ">= 200x", ours / base >= 200))
    tab.add(Row("ingest", "store/load.py absolute rate", f"{ours:,.0f} records/s", "-", None,
                ">= 250,000/s", ours >= 250_000))


def _stamps(path: Path, field: int = 1) -> dict[str, float]:
    """The bench hooks' stamp lines, `<event> <unix time> <CPU s of the add process>`: the
    first of each event's `field` (1: when it started, 2: the parent's CPU by then)."""
    out: dict[str, float] = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) > field:
                out.setdefault(parts[0], float(parts[field]))
    except (OSError, ValueError):
        pass
    return out


@dataclass
class AddRun:
    """One timed `archiveflow add` of the startup section."""

    stamps: dict[str, float]  # event -> s from the command's start to the hook's start
    cpu: dict[str, float]  # event -> CPU s (user + sys) the add process had used by then
    total: float  # s to exit
    cpu_total: float  # CPU s of the add process in all (wait4)
    rc: int


def _add_once(data: Path, stamp: Path) -> AddRun:
    cmd = [str(CLI), "--data-dir", str(data), "add", "https://example.com/startup",
           "--plugins", "stamp", "--config", f"PLUGINS_PATH={STAMP_PLUGINS}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=child_env(BENCH_STAMP_FILE=str(stamp)), cwd=WORK,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(900, proc.kill)
    watchdog.start()
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    watchdog.cancel()
    total = time.time() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        print(err.decode(errors="replace")[-2000:], flush=True)
    return AddRun({k: v - t0 for k, v in _stamps(stamp).items()}, _stamps(stamp, 2), total,
                  usage.ru_utime + usage.ru_stime, rc)


def section_startup(tab: Table, ns: argparse.Namespace) -> None:
    """`add URL` to its first hooks and to its exit, cold and warm. Wall times move with the
    machine's load; the CPU the `add` process had used when its first on_Snapshot hook
    started (read by the stamp hook from /proc) and in all moves much less: both are shown."""
    from archiveflow.flows.prefect_server import _template_path

    hook = STAMP_PLUGINS / "stamp" / "on_Crawl__00_stamp.py"
    floor = []
    for i in range(3):
        stamp = WORK / f"startup-floor-{i}.txt"
        stamp.unlink(missing_ok=True)
        t0 = time.time()
        subprocess.run([sys.executable, str(hook)], env=child_env(BENCH_STAMP_FILE=str(stamp)),
                       stdout=subprocess.DEVNULL, check=True, cwd=WORK)
        floor.append(_stamps(stamp)["on_Crawl"] - t0)
    base = statistics.median(floor)
    template = _template_path().exists()
    data = fresh_dir("startup")
    try:
        runs: dict[str, AddRun] = {}
        for case in ("cold", "warm", "warm2", "warm3"):
            stamp = WORK / f"startup-{case}.txt"
            stamp.unlink(missing_ok=True)
            runs[case] = _add_once(data, stamp)
        # Three warm runs (noise on a shared machine): the median of each figure.
        warm = [runs[c] for c in ("warm", "warm2", "warm3")]

        def med(field: str, key: str) -> float | None:
            xs = [getattr(r, field)[key] for r in warm if key in getattr(r, field)]
            return statistics.median(xs) if len(xs) == len(warm) else None

        runs["warm"] = AddRun(
            {k: v for k in ("on_Crawl", "on_Snapshot") if (v := med("stamps", k)) is not None},
            {k: v for k in ("on_Crawl", "on_Snapshot") if (v := med("cpu", k)) is not None},
            statistics.median(r.total for r in warm),
            statistics.median(r.cpu_total for r in warm), max(r.rc for r in warm))
        for case, crawl_limit, snap_limit in (("cold", 3.0, 3.0), ("warm", 1.5, 1.5)):
            run = runs[case]
            first = run.stamps.get("on_Crawl")
            snap = run.stamps.get("on_Snapshot")
            what = ("fresh data dir, server started" +
                    (", Prefect DB template present" if template else ", no DB template")
                    if case == "cold" else "server of that data dir running; median of 3")
            if first is None:
                tab.add(Row("startup", f"{case}: add -> first hook",
                            f"no hook ran (exit {run.rc})", fmt_s(base), None,
                            f"<= {crawl_limit} s", False, what))
                continue
            tab.add(Row("startup", f"{case}: add -> first (on_Crawl) hook", fmt_s(first),
                        f"{fmt_s(base)} bare hook spawn", first / base, f"<= {crawl_limit} s",
                        first <= crawl_limit, what))
            snap_cpu = run.cpu.get("on_Snapshot")
            tab.add(Row("startup", f"{case}: `add URL` -> first on_Snapshot hook",
                        fmt_s(snap) if snap is not None
                        else f"no on_Snapshot hook (exit {run.rc})",
                        fmt_s(base), snap / base if snap is not None else None,
                        f"<= {snap_limit} s", snap is not None and snap <= snap_limit,
                        what + (f"; CPU of `add` by then {snap_cpu:.2f} s"
                                if snap_cpu is not None else "")))
            tab.add(Row("startup", f"{case}: one-page `add` to exit (a no-op hook)",
                        fmt_s(run.total), fmt_s(base), run.total / base,
                        "<= 2 s" if case == "warm" else "-",
                        (run.total <= 2.0 and run.rc == 0) if case == "warm" else None,
                        f"exit {run.rc}; CPU of `add` {run.cpu_total:.2f} s"))
    finally:
        stop_server(data)


def _noop_plugins(k: int) -> str:
    return ",".join(f"noop{i}" for i in range(1, k + 1))


def overhead_row(tab: Table, label: str, n: int, k: int, crawl: dict[str, Any],
                 floor: float, target: float | None) -> None:
    wall = crawl["wall"]
    ratio = wall / floor
    per_snap = (wall - floor) / n * 1e3
    per_ar = (wall - floor) / (n * k) * 1e3
    ok_count = crawl["sealed"] == n and sum(crawl["results"].values()) == n * k
    tab.add(Row("overhead", f"{label}: N={n} x K={k} no-op, crawl vs floor", fmt_s(wall),
                fmt_s(floor), ratio, f"<= {target}x" if target else "-",
                (ratio <= target and ok_count) if target else None,
                f"+{per_snap:.0f} ms/Snapshot, +{per_ar:.1f} ms/ArchiveResult above the floor; "
                f"orchestrator CPU {crawl['cpu'] / n * 1e3:.0f} ms/Snapshot, server "
                f"{crawl.get('server_cpu', 0) / n * 1e3:.0f} ms/Snapshot; "
                f"{crawl['sealed']}/{n} sealed, results {crawl['results']}; orchestrator peak "
                f"RSS {crawl['peak_rss'] / 2**20:.0f} MB, server {crawl['server_rss'] / 2**20:.0f}"
                " MB"))


def section_overhead(tab: Table, ns: argparse.Namespace) -> None:
    n, k, c = ns.n, ns.k, ns.concurrency
    plugins = _noop_plugins(k)
    hooks, env = hook_setup(plugins, NOOP_PLUGINS)
    assert len(hooks) == k, hooks
    data = fresh_dir("overhead")
    floor_dir = WORK / "overhead-floor"
    try:
        # Warm the data dir's Prefect server (and the page cache) with a tiny crawl first.
        run_crawl_child(data, [f"https://example.com/warm/{i}" for i in range(4)], depth=0,
                        plugins=plugins, plugins_path=NOOP_PLUGINS, concurrency=c)
        urls = [f"https://example.com/bench/{i}" for i in range(n)]
        f1 = spawn_floor(urls, hooks, env, c, floor_dir)
        print(f"  floor before: {f1:.1f} s (load {loadavg()})", flush=True)
        crawl = run_crawl_child(data, [u + "?g=s" for u in urls], depth=0, plugins=plugins,
                                plugins_path=NOOP_PLUGINS, concurrency=c)
        print(f"  crawl: {crawl['wall']:.1f} s (load {loadavg()})", flush=True)
        plain = lean = None
        if ns.diagnostic:
            lean = run_crawl_child(data, [u + "?g=l" for u in urls], depth=0, plugins=plugins,
                                   plugins_path=NOOP_PLUGINS, concurrency=c,
                                   env={"ARCHIVEFLOW_PREFECT_RESULT_RUNS": "0"})
            print(f"  without ArchiveResult task runs: {lean['wall']:.1f} s (load {loadavg()})",
                  flush=True)
            plain = run_crawl_child(data, [u + "?g=n" for u in urls], depth=0,
                                    plugins=plugins, plugins_path=NOOP_PLUGINS, concurrency=c,
                                    granularity="none")
            print(f"  same work without Prefect: {plain['wall']:.1f} s (load {loadavg()})",
                  flush=True)
        f2 = spawn_floor(urls, hooks, env, c, floor_dir)
        print(f"  floor after: {f2:.1f} s (load {loadavg()})", flush=True)
        floor = (f1 + f2) / 2
        overhead_row(tab, f"granularity=snapshot (default), C={c}", n, k, crawl, floor, 1.3)
        if lean is not None:
            overhead_row(tab, "ARCHIVEFLOW_PREFECT_RESULT_RUNS=0 (Crawl + Snapshot runs only)",
                         n, k, lean, floor, 1.3 if n >= 1000 else None)
        if plain is not None:
            overhead_row(tab, "diagnostic: same model-module calls, no Prefect", n, k, plain,
                         floor, None)
        if abs(f1 - f2) / floor > 0.15:
            tab.note(f"overhead N={n}: the floor moved {f1:.1f} -> {f2:.1f} s during the run "
                     "(machine load); the ratio uses their mean")
        if ns.profile:  # an extra, untimed run under py-spy (it costs CPU itself)
            prof = OUT / f"profile-overhead-n{n}.txt"
            run_crawl_child(data, [u + "?g=p" for u in urls], depth=0, plugins=plugins,
                            plugins_path=NOOP_PLUGINS, concurrency=c, profile=prof)
            tab.note(f"profile of an N={n} crawl (granularity=snapshot): "
                     f"{summarize_profile(prof)}")
        nt = ns.task_n
        if not nt:
            return
        turls = urls[:nt]
        g1 = spawn_floor(turls, hooks, env, c, floor_dir)
        crawl_t = run_crawl_child(data, [u + "?g=t" for u in turls], depth=0, plugins=plugins,
                                  plugins_path=NOOP_PLUGINS, concurrency=c, granularity="task")
        crawl_s = run_crawl_child(data, [u + "?g=s2" for u in turls], depth=0, plugins=plugins,
                                  plugins_path=NOOP_PLUGINS, concurrency=c)
        g2 = spawn_floor(turls, hooks, env, c, floor_dir)
        overhead_row(tab, "granularity=task", nt, k, crawl_t, (g1 + g2) / 2, None)
        overhead_row(tab, "granularity=snapshot, same small N", nt, k, crawl_s, (g1 + g2) / 2,
                     None)
    finally:
        stop_server(data)
        shutil.rmtree(floor_dir, ignore_errors=True)


def load_site() -> Any:
    """bench/site.py by path: the name `site` is the standard library's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_site", BENCH / "site.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_site"] = mod
    spec.loader.exec_module(mod)
    return mod


def section_crawl(tab: Table, ns: argparse.Namespace) -> None:
    site_mod = load_site()
    Server, generate = site_mod.Server, site_mod.generate

    n, c = ns.site_n, ns.concurrency
    site = generate(n)
    data = fresh_dir("crawl")
    with Server(site) as srv:
        seeds, pages = site.seed_urls(srv.base), site.page_urls(srv.base)
        try:
            # wget -r -l 2 of the site, fetch only: context for what the network side costs.
            wdir = WORK / "crawl-wget"
            shutil.rmtree(wdir, ignore_errors=True)
            seeds_file = WORK / "crawl-seeds.txt"
            seeds_file.write_text("\n".join(seeds) + "\n")
            t = time.perf_counter()
            subprocess.run(["wget", "-q", "-r", "-l", "2", "-P", str(wdir), "-i",
                            str(seeds_file)], check=False, timeout=600)
            wget_s = time.perf_counter() - t
            fetched = len(list(wdir.rglob("*.html")))
            wgetp = wget_p_floor(pages, c, WORK / "crawl-wget-p")
            print(f"  wget -p per page: {wgetp:.1f} s for {n} pages (load {loadavg()})",
                  flush=True)
            hooks, env = hook_setup(REAL_PLUGINS, None)
            # The floor runs before and after the crawl and the ratio takes their mean: on a
            # shared machine the load moves between two runs a minute apart (one floor
            # before the crawl gave 0.47x and 0.75x for the same code).
            k0 = _children_cpu()
            floor_before = spawn_floor(pages, hooks, env, c, WORK / "crawl-floor")
            floor_cpu = _children_cpu() - k0
            print(f"  floor: {floor_before:.1f} s for {n} pages (load {loadavg()})", flush=True)
            crawl = run_crawl_child(data, seeds, depth=2, plugins=REAL_PLUGINS,
                                    plugins_path=None, concurrency=c)
            crawl_load = loadavg()
            print(f"  crawl: {crawl['wall']:.1f} s, {crawl['snapshots']} snapshots "
                  f"(load {crawl_load})", flush=True)
            k0 = _children_cpu()
            floor_after = spawn_floor(pages, hooks, env, c, WORK / "crawl-floor")
            floor_cpu = (floor_cpu + _children_cpu() - k0) / 2
            print(f"  floor again: {floor_after:.1f} s (load {loadavg()})", flush=True)
            floor = (floor_before + floor_after) / 2
            abx = run_abx(pages[: ns.abx_pages], srv.base) if ns.abx_pages else None
        finally:
            stop_server(data)
            shutil.rmtree(WORK / "crawl-floor", ignore_errors=True)
    got = crawl["snapshots"]
    ours = got / crawl["wall"]
    floor_ps = n / floor
    server_cpu = crawl.get("server_cpu_crawl")
    server_cpu = crawl.get("server_cpu", 0) if server_cpu is None else server_cpu
    # What the wall ratio tends to on a machine the work saturates, from CPU alone (steadier
    # under a moving load): the floor's CPU over everything the crawl used (its hooks, the
    # orchestrator, the Prefect server).
    per = 1e3 / max(got, 1)
    used = crawl.get("hooks_cpu", 0) + crawl["cpu"] + server_cpu
    cpu_ratio = floor_cpu * got / n / used if used else 0.0
    tab.add(Row("crawl", f"depth-2 crawl of {n} pages ({REAL_PLUGINS}), C={c}: pages/s vs "
                "floor", f"{ours:.2f} pages/s ({fmt_s(crawl['wall'])})",
                f"{floor_ps:.2f} pages/s ({fmt_s(floor)}) same hooks spawned directly",
                ours / floor_ps, ">= 0.9x", ours / floor_ps >= 0.9,
                f"{got} snapshots ({crawl['sealed']} sealed), results {crawl['results']}; "
                f"floor {floor_before:.1f} s before the crawl, {floor_after:.1f} s after; "
                f"CPU per page: hooks {crawl.get('hooks_cpu', 0) * per:.0f} ms (the floor's "
                f"{floor_cpu / n * 1e3:.0f} ms), orchestrator {crawl['cpu'] * per:.0f} ms, "
                f"Prefect server {server_cpu * per:.0f} ms during the crawl: CPU ratio "
                f"{cpu_ratio:.2f}x; load {crawl_load}"))
    wgetp_ps = n / wgetp
    tab.add(Row("crawl", f"same crawl vs `wget -p -E -k` spawned once per page, C={c} (fetch + "
                "requisites only: the floor of any per-page archiver)", f"{ours:.2f} pages/s",
                f"{wgetp_ps:.1f} pages/s ({fmt_s(wgetp)})", ours / wgetp_ps, ">= 0.25x",
                ours / wgetp_ps >= 0.25))
    tab.add(Row("crawl", "context: wget -r -l 2 of the site (fetch only)",
                f"{ours:.2f} pages/s", f"{fetched / wget_s:.0f} pages/s ({fetched} pages, "
                f"{wget_s:.2f} s)", None, "-", None,
                f"fetching alone is {fetched / wget_s / ours:.0f}x ours: the hooks' own work "
                "bounds the crawl, not the network"))
    if abx and abx.get("pages"):
        abx_ps = abx["pages"] / abx["seconds"]
        tab.add(Row("crawl", f"vs ArchiveBox runner (abx-dl, sequential, {abx['pages']} pages of "
                    "the same list)", f"{ours:.2f} pages/s", f"{abx_ps:.3f} pages/s "
                    f"({abx['seconds'] / abx['pages']:.2f} s/page)", ours / abx_ps, ">= 25x",
                    ours / abx_ps >= 25, abx.get("how", "")))
    else:
        why = (abx or {}).get("error", "not run (--abx-pages 0)")
        tab.add(Row("crawl", "vs ArchiveBox runner (abx-dl): NOT MEASURED HERE",
                    f"{ours:.2f} pages/s", "0.40-0.48 pages/s (MEASUREMENTS.md)",
                    ours / 0.44, ">= 25x", ours / 0.44 >= 25, why))


def wget_p_floor(urls: Sequence[str], concurrency: int, out_dir: Path,
                 timeout: float = 120) -> float:
    """`wget -p -E -k` once per page (the page and its requisites, links converted), C
    pages at once: what any archiver that fetches each page on its own must pay. Seconds."""
    shutil.rmtree(out_dir, ignore_errors=True)

    def one(item: tuple[int, str]) -> None:
        i, url = item
        subprocess.run(["wget", "-q", "-p", "-E", "-k", "-P", str(out_dir / f"s{i}"), url],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                       check=False)

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, enumerate(urls)))
    took = time.perf_counter() - t
    shutil.rmtree(out_dir, ignore_errors=True)
    return took


def run_abx(pages: Sequence[str], base: str) -> dict[str, Any]:
    """abx-dl over the page list, one page at a time (bench/abx.py, in its own venv)."""
    py = OUT / "abx-venv" / "bin" / "python"
    if not py.exists():
        return {"error": f"{py} missing: run `bench/abx.py --setup` (see bench/README.md)"}
    out = WORK / "abx"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    urls = out / "urls.txt"
    urls.write_text("\n".join(pages) + "\n")
    proc = subprocess.run([str(py), str(BENCH / "abx.py"), "--urls", str(urls), "--out",
                           str(out)], capture_output=True, text=True, timeout=7200,
                          env=child_env(), check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("ABX-RESULT "):
            return json.loads(line.split(" ", 1)[1])
    return {"error": f"abx-dl run failed (exit {proc.returncode}): "
                     f"{(proc.stderr or proc.stdout)[-300:]!r}"}


def _past_ids(n: int, days: float) -> list[str]:
    """n UUIDv7 ids (store/ids.new_id's layout) whose times are spread evenly over the
    `days` before now, in order: the ids of an index grown crawl by crawl."""
    import uuid

    now_ms = time.time_ns() // 1_000_000
    span = int(days * 86_400_000)
    out = []
    for i in range(n):
        ms = now_ms - span + span * i // max(1, n)
        rand = int.from_bytes(os.urandom(10), "big")
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
        out.append(str(uuid.UUID(int=value | 0b10 << 62 | rand & ((1 << 62) - 1))))
    return out


def _growth_index(size: int, k: int, days: float = 30.0) -> tuple[Any, Path]:
    """A fresh index holding `size` ArchiveResults: size/k sealed Snapshots of one crawl
    ("big"), k results and a process row per result (untimed). Their ids are UUIDv7 of
    the `days` before now, as in an index that grew over time (0: all made now; then every
    old id shares its 8-byte prefix, which DuckDB's min/max of a VARCHAR keeps, with the
    new ones, and no row group can be skipped by id: not what a grown index looks like)."""
    import polars as pl

    from archiveflow.store.db import Store
    from archiveflow.store.ids import new_id
    from archiveflow.store.load import frame, insert_frame

    d = fresh_dir(f"index-growth-{size}")
    st = Store(d / "index.duckdb")
    now = datetime.now(UTC)
    n = max(1, size // k)
    with st.transaction() as cur:
        sids = _past_ids(n, days) if days else [new_id() for _ in range(n)]
        insert_frame(cur, "snapshot", frame("snapshot", pl.DataFrame({
            "id": sids, "crawl_id": ["big"] * n,
            "url": [f"https://example.com/old/{i}" for i in range(n)],
            "output_dir": sids, "status": ["sealed"] * n})), on_conflict="error")
        ids = _past_ids(n * k, days) if days else [new_id() for _ in range(n * k)]
        snaps = [sids[i // k] for i in range(n * k)]
        insert_frame(cur, "archiveresult", frame("archiveresult", pl.DataFrame({
            "id": ids, "snapshot_id": snaps,
            "plugin": [f"p{i % k}" for i in range(n * k)],
            "hook_name": [f"h{i % k}" for i in range(n * k)], "output_dir": snaps,
            "status": ["succeeded"] * (n * k)})), on_conflict="error")
        insert_frame(cur, "process", frame("process", pl.DataFrame({
            "id": ids, "owner_type": ["archiveresult"] * (n * k), "owner_id": ids,
            "hook_name": ["h"] * (n * k), "pid": [1] * (n * k), "cmd": ["x"] * (n * k),
            "cwd": ["/"] * (n * k), "started_at": [now] * (n * k)})),
            on_conflict="error")
    st.execute("CHECKPOINT")  # as an index a crawl opens: written, not in the WAL
    return st, d


GROWTH_STEPS: tuple[str, ...] = ("discover", "claim+prepare", "record")


def _growth_batch(st: Any, tag: str, k: int, batch: int) -> dict[str, tuple[float, float]]:
    """One batch of `batch` snapshots through the pipeline's index writes, as a C=4 crawl
    makes them: discovered URLs inserted (store/load.insert_snapshots), claimed and
    prepared (claim_snapshots, results_of, create_started: tasks/snapshots.prepare),
    recorded (finish_results, add_processes, seal_snapshots: the Recorder's transaction).
    (wall s, CPU s of this process, DuckDB's threads included) per step."""
    import polars as pl

    from archiveflow.store import results as result_store
    from archiveflow.store import snapshots as snapshot_store
    from archiveflow.store.ids import new_id
    from archiveflow.store.load import insert_snapshots
    from archiveflow.store.processes import add_processes

    now = datetime.now(UTC)
    urls = pl.DataFrame({"url": [f"https://example.com/new/{tag}/{j}" for j in range(batch)]})
    urls = urls.with_columns(depth=pl.lit(1, pl.Int32), title=pl.lit(None, pl.Utf8),
                             parent_id=pl.lit(None, pl.Utf8),
                             bookmarked_at=pl.lit(None, pl.Datetime("us", "UTC")),
                             config=pl.lit(None, pl.Utf8))
    marks = [(time.perf_counter(), time.process_time())]
    with st.transaction() as cur:
        insert_snapshots(cur, urls, crawl_id="big", username="default")
    marks.append((time.perf_counter(), time.process_time()))
    with st.transaction() as cur:
        got = [row["id"] for row in snapshot_store.claim_snapshots(
            cur, "big", limit=batch, lease=300)]
        result_store.results_of(cur, got)
        rows = [{"id": new_id(), "snapshot_id": sid, "plugin": f"p{j}",
                 "hook_name": f"h{j}", "output_dir": sid, "is_background": False}
                for sid in got for j in range(k)]
        result_store.create_started(cur, rows, lease=300)
    marks.append((time.perf_counter(), time.process_time()))
    with st.transaction() as cur:
        result_store.finish_results(cur, [
            {"id": x["id"], "status": "succeeded", "output_str": "x"} for x in rows])
        add_processes(cur, [
            {"id": new_id(), "owner_type": "archiveresult", "owner_id": x["id"],
             "hook_name": x["hook_name"], "pid": 1, "cmd": "x", "cwd": "/",
             "started_at": now} for x in rows], fresh_ids=True)
        snapshot_store.seal_snapshots(cur, got)
    marks.append((time.perf_counter(), time.process_time()))
    assert len(got) == batch, got
    return {name: (marks[i + 1][0] - marks[i][0], marks[i + 1][1] - marks[i][1])
            for i, name in enumerate(GROWTH_STEPS)}


def index_growth(sizes: Sequence[int], k: int = 5, batch: int = 4, reps: int = 60,
                 warmup: int = 3) -> dict[int, dict[str, float]]:
    """ms per Snapshot of the index writes the pipeline makes for it (_growth_batch), on
    indexes that already hold `size` ArchiveResults. Every index is built first and kept
    open; then the sizes take turns, one batch each per round (the order alternates), so
    a change of load hits every size alike. Medians over `reps` rounds (after `warmup`),
    of wall time and of CPU time (this process: DuckDB's threads count, other processes'
    load does not): per step, and of the per-batch total (`total`, `total_cpu`)."""
    stores: dict[int, tuple[Any, Path]] = {}
    try:
        for size in sizes:
            stores[size] = _growth_index(size, k)
        got: dict[int, list[dict[str, tuple[float, float]]]] = {size: [] for size in sizes}
        for r in range(warmup + reps):
            for size in (sizes if r % 2 == 0 else list(reversed(sizes))):
                one = _growth_batch(stores[size][0], f"{r}", k, batch)
                if r >= warmup:
                    got[size].append(one)
        out: dict[int, dict[str, float]] = {}
        for size, runs in got.items():
            ms: dict[str, float] = {}
            for name in GROWTH_STEPS:
                ms[name] = statistics.median(x[name][0] for x in runs) / batch * 1e3
                ms[f"{name}_cpu"] = statistics.median(x[name][1] for x in runs) / batch * 1e3
            ms["total"] = statistics.median(
                sum(x[n][0] for n in GROWTH_STEPS) for x in runs) / batch * 1e3
            ms["total_cpu"] = statistics.median(
                sum(x[n][1] for n in GROWTH_STEPS) for x in runs) / batch * 1e3
            out[size] = ms
        return out
    finally:
        for st, d in stores.values():
            st.close()
            shutil.rmtree(d, ignore_errors=True)


def section_scale(tab: Table, ns: argparse.Namespace) -> None:
    c = ns.concurrency
    points = list(ns.scale_n)
    data = fresh_dir("scale")
    res: dict[int, dict[str, Any]] = {}
    try:
        run_crawl_child(data, [f"https://example.com/warm/{i}" for i in range(4)], depth=0,
                        plugins="noop1", plugins_path=NOOP_PLUGINS, concurrency=c)
        for n in points:
            urls = [f"https://example.com/scale{n}/{i}" for i in range(n)]
            res[n] = run_crawl_child(data, urls, depth=0, plugins="noop1",
                                     plugins_path=NOOP_PLUGINS, concurrency=c)
            r = res[n]
            print(f"  N={n}: {r['wall']:.1f} s, {r['wall'] / n * 1e3:.1f} ms/snapshot, peak RSS "
                  f"{r['peak_rss'] / 2**20:.0f} MB (load {loadavg()})", flush=True)
    finally:
        stop_server(data)
    growth = index_growth([5 * points[0], 500_000])
    base_size = 5 * points[0]
    base = growth[base_size]
    for size, ms in growth.items():
        if size == base_size:
            continue
        parts = ", ".join(f"{name} {ms[name + '_cpu']:.1f} vs {base[name + '_cpu']:.1f}"
                          for name in GROWTH_STEPS)
        ratio = ms["total_cpu"] / base["total_cpu"]
        tab.add(Row("scale", f"per-Snapshot index writes on an index of {size:,} results "
                    f"(~{size // 5:,} snapshots) vs {base_size:,}, CPU time",
                    f"{ms['total_cpu']:.1f} ms", f"{base['total_cpu']:.1f} ms", ratio,
                    "<= 1.2x", ratio <= 1.2,
                    f"batches of 4 snapshots x 5 results, sizes interleaved, median of 60; "
                    f"CPU ms per snapshot: {parts}; wall {ms['total']:.1f} vs "
                    f"{base['total']:.1f} ms ({ms['total'] / base['total']:.2f}x)"))
    small = points[0]
    per_small = res[small]["wall"] / small * 1e3
    for n in points[1:]:
        per = res[n]["wall"] / n * 1e3
        tab.add(Row("scale", f"time per Snapshot, N={n:,} vs N={small:,} (K=1 no-op, C={c})",
                    f"{per:.1f} ms", f"{per_small:.1f} ms", per / per_small, "<= 1.2x",
                    per / per_small <= 1.2,
                    f"{res[n]['sealed']}/{n} sealed; wall {fmt_s(res[n]['wall'])}"))
    for n in points:
        r = res[n]
        tab.add(Row("scale", f"orchestrator peak RSS at N={n:,}", f"{r['peak_rss'] / 2**20:.0f} MB",
                    f"Prefect server {r['server_rss'] / 2**20:.0f} MB (reported apart)", None,
                    "<= 500 MB", r["peak_rss"] <= 500 * 2**20 if n >= 10_000 else None))
        if n == 1000:
            both = (r["peak_rss"] + r["server_rss"]) / 2**20
            tab.add(Row("scale", "memory during a 1,000-URL crawl: orchestrator + Prefect server "
                        "(peaks)", f"{both:.0f} MB", f"{r['peak_rss'] / 2**20:.0f} + "
                        f"{r['server_rss'] / 2**20:.0f} MB", None, "<= 400 MB", both <= 400))


# --- profile summary (py-spy raw = collapsed stacks) --------------------------------------

def _owner(loc: str) -> str:
    for pkg in ("tasks/", "store/", "flows/"):
        if loc.startswith(pkg) or f"/{pkg}" in loc:
            return "ours"
    for pkg in ("prefect", "duckdb", "polars", "psutil", "httpx", "httpcore", "anyio",
                "pydantic", "websockets", "sqlalchemy"):
        if loc.startswith(pkg) or f"/{pkg}" in loc:
            return pkg
    return "other"


def summarize_profile(path: Path, top: int = 10) -> str:
    """Where the orchestrator's CPU samples went, from py-spy's raw (collapsed) output:
    by the package that owns the innermost known frame, and the top inclusive functions."""
    if not path.exists():
        return f"no profile ({path} missing: pip install py-spy into .venv)"
    incl: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            k = int(count)
        except ValueError:
            continue
        total += k
        seen = set()
        owner = "other"
        for frame in stack.split(";"):
            name, _, loc = frame.partition(" (")
            loc = loc.rstrip(")").split(":")[0].replace(str(ROOT) + "/", "")
            o = _owner(loc)
            if o != "other":
                owner = o  # the innermost known frame wins
            key = f"{name} ({loc})"
            if key not in seen and o in ("ours", "prefect"):
                seen.add(key)
                incl[key] = incl.get(key, 0) + k
        buckets[owner] = buckets.get(owner, 0) + k
    if not total:
        return "empty profile"
    ranked = sorted(incl.items(), key=lambda kv: -kv[1])

    def show(xs: list[tuple[str, int]]) -> str:
        return ", ".join(f"{k} {v / total:.0%}" for k, v in xs[:top])

    by = ", ".join(f"{k} {v / total:.0%}"
                   for k, v in sorted(buckets.items(), key=lambda kv: -kv[1]))
    ours = [(k, v) for k, v in ranked if _owner(k.split(" (", 1)[1]) == "ours"]
    pref = [(k, v) for k, v in ranked if _owner(k.split(" (", 1)[1]) == "prefect"]
    return (f"{total} CPU samples (py-spy, 50/s, idle excluded); by innermost owner: {by}; "
            f"ours, inclusive: {show(ours)}; Prefect, inclusive: {show(pref)}")


# --- main ---------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_crawl"]:
        cp = argparse.ArgumentParser(prog="run.py _crawl")
        cp.add_argument("--data", required=True)
        cp.add_argument("--seeds", required=True)
        cp.add_argument("--depth", type=int, default=0)
        cp.add_argument("--plugins", required=True)
        cp.add_argument("--plugins-path")
        cp.add_argument("--concurrency", type=int, default=4)
        cp.add_argument("--granularity", default="snapshot",
                        choices=["snapshot", "task", "none"])
        cp.add_argument("--config", action="append")
        child_crawl(cp.parse_args(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--quick", action="store_true", help="N=100, smaller scale points")
    ap.add_argument("--scale", action="store_true", help="add N=100k to the scale section")
    ap.add_argument("--n", type=int, help="overhead: snapshots (default 1000, quick 100)")
    ap.add_argument("--k", type=int, default=5, help="overhead: no-op hooks per snapshot")
    ap.add_argument("--concurrency", type=int, default=4, help="snapshots at once (CLI default)")
    ap.add_argument("--task-n", type=int, help="overhead at granularity=task: snapshots "
                    "(default 50, quick 20; 0 = skip)")
    ap.add_argument("--site-n", type=int, default=200, help="crawl: pages of the site")
    ap.add_argument("--abx-pages", type=int, help="crawl: pages given to abx-dl (default 40, "
                    "quick 10; 0 = skip)")
    ap.add_argument("--scale-n", type=lambda s: [int(x) for x in s.split(",")],
                    help="scale: snapshot counts, first is the reference (default 1000,10000; "
                    "quick 300,1000)")
    ap.add_argument("--no-diagnostic", dest="diagnostic", action="store_false",
                    help="overhead: skip the crawl without Prefect")
    ap.add_argument("--ingest-n", type=int, default=100_000)
    ap.add_argument("--ingest-rows", type=int, help="ingest: rows for executemany "
                    "(default 2000, quick 1000)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--profile", action="store_true",
                    help="run the overhead crawl under py-spy (needs .venv/bin/py-spy)")
    ns = ap.parse_args(argv)
    q = ns.quick
    ns.n = ns.n or (100 if q else 1000)
    ns.task_n = (20 if q else 50) if ns.task_n is None else ns.task_n
    ns.abx_pages = (10 if q else 40) if ns.abx_pages is None else ns.abx_pages
    ns.scale_n = ns.scale_n or ([300, 1000] if q else [1000, 10_000])
    if ns.scale and 100_000 not in ns.scale_n:
        ns.scale_n.append(100_000)
    ns.ingest_rows = ns.ingest_rows or (1000 if q else 2000)
    wanted = [s.strip() for s in ns.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    WORK.mkdir(parents=True, exist_ok=True)
    tab = Table(argv="bench/run.py " + " ".join(argv))
    print(f"archiveflow bench, {machine()}, load {loadavg()}", flush=True)
    print("| section | figure | ours | baseline | ratio | target | result |", flush=True)
    fns: dict[str, Callable[[Table, argparse.Namespace], None]] = {
        "ingest": section_ingest, "startup": section_startup, "overhead": section_overhead,
        "crawl": section_crawl, "scale": section_scale}
    failed = False
    for name in SECTIONS:
        if name not in wanted:
            continue
        tab.loads.append(f"{name} {loadavg()}")
        t = time.perf_counter()
        try:
            fns[name](tab, ns)
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
            failed = True
            tab.note(f"section {name} failed: {type(e).__name__}: {e}")
        print(f"  [{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    tab.loads.append(f"end {loadavg()}")
    tab.write()
    print(f"table written to {OUT / 'latest.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    tempfile.tempdir = None
    sys.exit(main())
