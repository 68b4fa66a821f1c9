"""Spawn overhead of run_hook against a bare subprocess.run of the same no-op Python hook.

    .venv/bin/python bench/hook_spawn.py [--runs 200]

Both sides run tests/fixtures/plugins/noop/on_Snapshot__00_noop.py with the running
interpreter. run_hook adds: the .sh and pid files, its own session, logs to files, the
descendant/leftover sweep, log capping and exit.json. update_from_output (parse + file
listing) is timed separately. The two are interleaved in blocks so drift hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archiveflow.tasks.discover import parse_hook_name
from archiveflow.tasks.hooks import run_hook, update_from_output

HOOK_PATH = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "plugins"
    / "noop"
    / "on_Snapshot__00_noop.py"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--block", type=int, default=20)
    ns = ap.parse_args()
    hook = parse_hook_name(HOOK_PATH)
    assert hook is not None
    env = dict(os.environ)
    args = {"url": "https://example.com", "snapshot_id": "bench"}
    argv = [sys.executable, str(HOOK_PATH), "--url=https://example.com", "--snapshot-id=bench"]
    bare: list[float] = []
    hooked: list[float] = []
    parse: list[float] = []
    cpu = {"bare": 0.0, "run_hook": 0.0}  # this process's CPU only: robust to a loaded machine
    tmp = Path(tempfile.mkdtemp(prefix="hook_spawn_"))
    try:
        for _ in range(3):  # warm-up: page cache, imports
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
            run_hook(hook, args=args, output_dir=tmp, env=env, timeout=30)
        while len(bare) < ns.runs:
            for _ in range(ns.block):
                c, t = time.process_time(), time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
                bare.append(time.perf_counter() - t)
                cpu["bare"] += time.process_time() - c
            for _ in range(ns.block):
                c, t = time.process_time(), time.perf_counter()
                run = run_hook(hook, args=args, output_dir=tmp, env=env, timeout=30)
                hooked.append(time.perf_counter() - t)
                cpu["run_hook"] += time.process_time() - c
                t = time.perf_counter()
                out = update_from_output(run, output_dir=tmp, snapshot_dir=tmp)
                parse.append(time.perf_counter() - t)
                assert out.status == "noresults", out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(xs: list[float]) -> str:
        xs = sorted(xs)
        mean, med = statistics.mean(xs) * 1e3, statistics.median(xs) * 1e3
        p90 = xs[int(len(xs) * 0.9)] * 1e3
        return f"mean {mean:6.2f} ms  median {med:6.2f} ms  p90 {p90:6.2f} ms"

    n = len(bare)
    print(f"no-op python hook, {n} runs each, interpreter {sys.executable}")
    print(f"bare subprocess.run      : {ms(bare)}")
    print(f"run_hook                 : {ms(hooked)}")
    print(f"update_from_output       : {ms(parse)}")
    mb, mh, mp = statistics.median(bare), statistics.median(hooked), statistics.median(parse)
    print(f"run_hook overhead        : {(mh - mb) * 1e3:+.2f} ms per run (median)")
    print(
        f"orchestrator CPU per run : bare {cpu['bare'] / n * 1e3:.2f} ms, "
        f"run_hook {cpu['run_hook'] / n * 1e3:.2f} ms"
    )
    print(f"load average (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    print(f"ratio run_hook / bare    : {mh / mb:.2f}")
    print(f"ratio (run_hook + update_from_output) / bare: {(mh + mp) / mb:.2f}")


if __name__ == "__main__":
    main()
