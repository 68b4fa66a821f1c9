"""Where a real crawl's orchestrator CPU goes: thread CPU time per function, per page.

    .venv/bin/python bench/crawl_cpu.py [--n 200]

Runs bench/run.py's crawl (the generated site, depth 2, wget,favicon,htmltotext,parse_html_urls,
C=4, after a one-page warm-up crawl that starts the data folder's Prefect server) in a child
process whose hot functions are wrapped to add up `time.thread_time()` (CPU of the calling
thread, steady under load): hook supervision and its parts, update_from_output, the
Recorder's batches, the search-text indexer, claim/prepare, the ArchiveResult task-run
events, the egress proxy. Prints ms of CPU per page for each (nested parts are included in
their callers), with the crawl's pages/s and orchestrator/server CPU per page. Compare trees
by running it from each (it measures the code of the tree it lives in).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OUT_ENV = "ARCHIVEFLOW_CRAWL_CPU_OUT"
WRAPPED = [  # (module, function or Class.method)
    ("archiveflow.tasks.hooks", "run_hook"),
    ("archiveflow.tasks.hooks", "_supervise"),
    ("archiveflow.tasks.hooks", "_finish"),
    ("archiveflow.tasks.hooks", "_write_cmd_file"),
    ("archiveflow.tasks.process", "spawn"),
    ("archiveflow.tasks.process", "kill_tree"),
    ("archiveflow.tasks.process", "find_marked"),
    ("archiveflow.tasks.process", "write_pid_file"),
    ("archiveflow.tasks.hooks", "update_from_output"),
    ("archiveflow.tasks.recorder", "write_batch"),
    ("archiveflow.store.search", "index_snapshots"),
    ("archiveflow.tasks.snapshots", "claim"),
    ("archiveflow.tasks.snapshots", "prepare"),
    ("archiveflow.tasks.egress", "EgressProxy._handle"),
    ("archiveflow.flows.result_runs", "report"),
]


def _load_run() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def _child(argv: list[str]) -> int:
    """bench/run.py _crawl with the functions above wrapped."""
    run = _load_run()
    cpu: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    originals: dict[tuple[str, str], Any] = {}
    for mod_name, name in WRAPPED:
        mod = importlib.import_module(mod_name)
        owner: Any = mod
        attr = name
        if "." in name:
            cls, attr = name.split(".")
            owner = getattr(mod, cls)
        fn = getattr(owner, attr)
        if inspect.iscoroutinefunction(fn):
            continue

        def wrapper(*a: Any, _fn: Any = fn, _label: str = name, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return _fn(*a, **k)
            finally:
                cpu[_label] += time.thread_time() - t
                calls[_label] += 1

        setattr(owner, attr, wrapper)
        originals[(mod_name, name)] = (fn, wrapper)
    # Names imported with `from … import` elsewhere point at the originals: rebind them.
    for mod in list(sys.modules.values()):
        if not getattr(mod, "__name__", "").startswith("archiveflow."):
            continue
        for (_, name), (fn, wrapper) in originals.items():
            if "." not in name and getattr(mod, name, None) is fn:
                setattr(mod, name, wrapper)
    done = run.child_crawl

    def child_crawl(ns: argparse.Namespace) -> None:
        done(ns)
        Path(os.environ[OUT_ENV]).write_text(json.dumps({"cpu": cpu, "calls": calls}))

    run.child_crawl = child_crawl
    return int(run.main(argv))


def main() -> int:
    if sys.argv[1:2] == ["_crawl"]:
        return _child(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="pages of the generated site")
    ns = ap.parse_args()
    run = _load_run()
    site_mod = run.load_site()
    site = site_mod.generate(ns.n)
    data = run.fresh_dir("crawl-cpu")
    out = data.parent / "crawl-cpu.json"
    popen = subprocess.Popen

    def through_us(cmd: Any, *a: Any, **k: Any) -> Any:  # the crawl child runs this file
        if "_crawl" in cmd:
            cmd = [cmd[0], str(Path(__file__).resolve()), *cmd[2:]]
            k["env"] = {**k.get("env", os.environ), OUT_ENV: str(out)}
        return popen(cmd, *a, **k)

    run.subprocess.Popen = through_us
    load0 = run.loadavg()
    with site_mod.Server(site) as srv:
        try:
            run.run_crawl_child(data, [srv.base + "/p/0.html"], depth=0, plugins="wget",
                                plugins_path=None, concurrency=4)  # starts the server
            res = run.run_crawl_child(data, site.seed_urls(srv.base), depth=2,
                                      plugins=run.REAL_PLUGINS, plugins_path=None,
                                      concurrency=4)
        finally:
            run.stop_server(data)
    got = max(res["snapshots"], 1)
    prof = json.loads(out.read_text())
    server = res.get("server_cpu_crawl")
    server = res["server_cpu"] if server is None else server
    print(f"{res['snapshots']} pages, {got / res['wall']:.2f} pages/s; CPU per page: "
          f"orchestrator {res['cpu'] / got * 1e3:.1f} ms, hooks "
          f"{res.get('hooks_cpu', 0) / got * 1e3:.1f} ms, Prefect server "
          f"{server / got * 1e3:.1f} ms; load {load0} -> {run.loadavg()}")
    print("| function | ms of CPU per page | calls |\n|---|---|---|")
    for name, secs in sorted(prof["cpu"].items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {secs / got * 1e3:.2f} | {prof['calls'][name]} |")
    print("(main thread, Prefect's task engine and client threads: the rest of the "
          "orchestrator's CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
