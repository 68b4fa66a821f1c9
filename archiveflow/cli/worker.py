"""`worker`: join the shared index and archive the snapshots any crawl queued, until stopped."""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType

from archiveflow.cli import doctor
from archiveflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Command,
    open_index,
    say,
)
from archiveflow.settings import settings


def cmd_worker(args: argparse.Namespace) -> int:
    from archiveflow.tasks.worker import Worker

    if not settings().catalog:
        raise CliError("`archiveflow worker` needs the shared index: set ARCHIVEFLOW_CATALOG "
                       "to its PostgreSQL URI (docs/scaling.md)", EXIT_USAGE)
    if args.concurrency < 1 or args.lease <= 0 or args.poll <= 0:
        raise CliError("--concurrency must be >= 1, --lease and --poll > 0", EXIT_USAGE)
    rt = open_index(args)
    try:
        worker = Worker(rt, concurrency=args.concurrency, lease=args.lease, poll=args.poll)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            say(f"worker {rt.machine.id}: {signal.Signals(signum).name}: finishing the "
                "snapshots it runs, claiming no more")
            worker.stop()
            signal.signal(signum, signal.SIG_DFL)  # a second one stops at once

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        say(f"worker {rt.machine.id} ({rt.machine.hostname}) joined {rt.store.where}: "
            f"{args.concurrency} at a time, lease {args.lease:g}s, binaries in {rt.lib_dir}")
        started = time.monotonic()
        report = worker.run()
        results = " ".join(f"{k} {v}" for k, v in sorted(report.results.items())) or "-"
        say(f"worker {rt.machine.id} stopped after {time.monotonic() - started:.1f}s: "
            f"{report.snapshots} snapshots archived (results: {results}), "
            f"{report.handed_back} handed back")
        for err in report.errors:
            say(f"error: {err}")
        return EXIT_FAILED if report.errors else EXIT_OK
    finally:
        rt.close()


def register(command: Command) -> None:
    """Add `worker` and `doctor` (which says whether the shared index answers)."""
    doctor.register(command)
    w = command("worker", cmd_worker,
                "Archive snapshots of every crawl in the shared index on this machine, until "
                "stopped (SIGTERM/Ctrl-C finish what runs). Needs ARCHIVEFLOW_CATALOG.")
    w.add_argument("--concurrency", type=int, default=2,
                   help="snapshots at once on this machine (default 2)")
    w.add_argument("--lease", type=float, default=300.0,
                   help="seconds a claimed snapshot stays this worker's without renewal; "
                   "after a crash another worker takes it then (default 300)")
    w.add_argument("--poll", type=float, default=1.0,
                   help="seconds between looks at the index when idle (default 1)")
