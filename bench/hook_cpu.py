"""CPU per hook per page of the built-in Snapshot plugins, as the pipeline launches them.

    .venv/bin/python bench/hook_cpu.py [--pages 20] [--plugins headers,wget,...]

Serves bench/site.py's generated site (5 KB pages) on 127.0.0.1 and runs each hook once per
page, one process at a time (so the CPU of the children is the hook's own: user + system,
its own children such as the wget binary included), in the order a snapshot runs them, with
the argv prefix archiveflow uses (tasks/discover.build_command: the hook's shebang, with
`env python3` replaced by the running interpreter) and the environment it gives hooks. The
readers (title, favicon, htmltotext, parse_html_urls) run twice: after wget, reading its
copy of the page (the pipeline's path), and with no wget copy (they fetch the page
themselves). Baselines in the same run: the interpreter starting and exiting
(`python -c pass`, with and without `-S`).

Prints a markdown table: median CPU ms and wall ms per hook per page.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PLUGINS = "headers,wget,title,favicon,htmltotext,parse_html_urls"
READERS = ("title", "favicon", "htmltotext", "parse_html_urls")


def _load(name: str, file: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(CPU s, wall s, exit code) of one process run to its end (its waited children too)."""
    c0, t0 = _children_cpu(), time.perf_counter()
    with open(cwd / "stdout.log", "wb") as o, open(cwd / "stderr.log", "wb") as e:
        rc = subprocess.run(argv, cwd=cwd, env=env, stdout=o, stderr=e, check=False,
                            start_new_session=True, timeout=120).returncode
    return _children_cpu() - c0, time.perf_counter() - t0, rc


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--plugins", default=PLUGINS)
    ns = ap.parse_args(argv)
    run = _load("bench_run", "run.py")
    site_mod = _load("bench_site", "site.py")
    from archiveflow.tasks.discover import build_command

    hooks, env = run.hook_setup(ns.plugins, None)
    order = [h.plugin for h in hooks]
    site = site_mod.generate(max(ns.pages, 10))
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    failed: dict[str, int] = {}

    def note(key: str, c: float, w: float, rc: int) -> None:
        cpu.setdefault(key, []).append(c)
        wall.setdefault(key, []).append(w)
        if rc not in (0, 10):
            failed[key] = failed.get(key, 0) + 1

    work = Path(tempfile.mkdtemp(prefix="hook-cpu-"))
    try:
        with site_mod.Server(site) as srv:
            urls = site.page_urls(srv.base)[: ns.pages]
            for i, url in enumerate(urls):
                for c, w, rc in (timed([sys.executable, "-c", "pass"], work, env),):
                    note("python -c pass", c, w, rc)
                c, w, rc = timed([sys.executable, "-S", "-c", "pass"], work, env)
                note("python -S -c pass", c, w, rc)
                for with_wget in (True, False):
                    snap = work / f"{'w' if with_wget else 'n'}{i}"
                    for hook in hooks:
                        if not with_wget and hook.plugin not in READERS:
                            continue
                        d = snap / hook.plugin
                        d.mkdir(parents=True, exist_ok=True)
                        args = [f"--url={url}", f"--snapshot-id=s{i}", "--crawl-id=bench",
                                "--depth=0"]
                        hook_env = {**env, "SNAP_DIR": str(snap), "EXTRA_CONTEXT": json.dumps(
                            {"plugin": hook.plugin, "hook_name": hook.name,
                             "snapshot_id": f"s{i}"})}
                        c, w, rc = timed([*build_command(hook.path), *args], d, hook_env)
                        key = hook.plugin if with_wget or hook.plugin not in READERS else \
                            f"{hook.plugin} (no wget copy: fetches the page)"
                        note(key, c, w, rc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import os

    print(f"# hook CPU per page: {ns.pages} pages of 5 KB, load "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"hooks launched as: {' '.join(build_command(hooks[0].path)[:-1]) or '(shebang)'} "
          f"<hook> (first hook shown)\n")
    print("| process | CPU ms/page (median) | wall ms/page (median) | failed |")
    print("|---|---|---|---|")
    keys = ["python -c pass", "python -S -c pass"]
    keys += [k for p in order for k in cpu if k == p or k.startswith(p + " (")]
    for k in keys:
        print(f"| {k} | {statistics.median(cpu[k]) * 1e3:.1f} | "
              f"{statistics.median(wall[k]) * 1e3:.1f} | {failed.get(k, 0)} |")
    total = sum(statistics.median(cpu[p]) for p in order if p in cpu)
    print(f"\nall {len(order)} hooks of one page (pipeline path): {total * 1e3:.0f} ms of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
