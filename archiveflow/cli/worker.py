"""`worker`: join the shared index and archive the snapshots any crawl queued, until stopped.

At its start a worker makes sure this machine's binaries are in the shared index before it
claims anything: with a Prefect API (PREFECT_API_URL) it registers and serves this
machine's install deployment (`install_binaries/install-binaries-<machine id>`,
deployments/binaries.py) and waits for a start-up run of it; without one it installs in
this process. A plugin this machine still cannot run is named, and its work is skipped
here (tasks/worker.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from types import FrameType
from typing import Any

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


def _binaries_line(rt: Any) -> str:
    ready = sorted(rt.binaries)
    failed = sorted(rt.failed_binaries)
    return (f"{len(ready)} ready ({', '.join(ready) or '-'})"
            + (f", {len(failed)} failed ({', '.join(failed)})" if failed else ""))


def _install(rt: Any, args: argparse.Namespace, worker: Any) -> Any:
    """This machine's binaries before the first claim; the served install deployment."""
    me = f"worker {rt.machine.id}"
    if args.no_binaries:
        say(f"{me}: --no-binaries: installing nothing, using the binaries recorded for this "
            f"machine and those on PATH")
        return None
    if not os.environ.get("PREFECT_API_URL", "").strip():
        from archiveflow.tasks.binaries import ensure_binaries

        say(f"{me}: no Prefect API (PREFECT_API_URL unset): installing this machine's "
            f"binaries in this process, without a deployment")
        ensure_binaries(rt)
        say(f"{me}: binaries {_binaries_line(rt)}")
        return None

    from archiveflow.deployments.binaries import MachineInstaller
    from archiveflow.flows.prefect_server import configure_prefect
    from archiveflow.tasks.schedules import ScheduleError, parse_every

    try:
        every = parse_every(args.binaries_every) if args.binaries_every else None
    except ScheduleError as e:
        raise CliError(str(e).replace("--every", "--binaries-every"), EXIT_USAGE) from e
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    api = configure_prefect(rt.data_dir).api_url
    installer = MachineInstaller(rt.data_dir, interval=every, say=say)
    try:
        installer.start()
    except Exception as e:
        installer.stop(5)
        raise CliError(f"{me}: cannot register deployment {installer.full_name} with the "
                       f"Prefect API at {api}: {type(e).__name__}: {e}; check PREFECT_API_URL "
                       "and PREFECT_API_AUTH_STRING (`archiveflow doctor`), or start with "
                       "--no-binaries", EXIT_FAILED) from e
    say(f"{me}: serving {installer.full_name} on this machine's own runner (every "
        f"{args.binaries_every or '1d'}; or `prefect deployment run {installer.full_name}`); "
        f"its start-up run {installer.first_run_id} installs this machine's binaries first")
    end = installer.wait_first(worker.stopping)
    if end.state == "STOPPED":
        return installer
    say(f"{me}: install run {end.name} ({end.id}) ended {end.state.lower()} after "
        f"{end.seconds:.1f}s" + (f": {end.message}" if end.message and end.state != "COMPLETED"
                                 else ""))
    if end.state != "COMPLETED":
        say(f"{me}: going on with the binaries recorded for this machine and those on PATH; "
            "see the run in the Prefect UI")
    rt.refresh_binaries()
    say(f"{me}: binaries {_binaries_line(rt)}")
    return installer


def cmd_worker(args: argparse.Namespace) -> int:
    from archiveflow.tasks.worker import Worker

    if not settings().catalog:
        raise CliError("`archiveflow worker` needs the shared index: set ARCHIVEFLOW_CATALOG "
                       "to its PostgreSQL URI (docs/scaling.md)", EXIT_USAGE)
    if args.concurrency < 1 or args.lease <= 0 or args.poll <= 0:
        raise CliError("--concurrency must be >= 1, --lease and --poll > 0", EXIT_USAGE)
    rt = open_index(args)
    installer = None
    try:
        slots = None
        if os.environ.get("PREFECT_API_URL", "").strip():
            # the plugins' global limits (one browser at a time), as the crawl's own process
            from archiveflow.flows.limits import WalkSlots
            from archiveflow.flows.prefect_server import configure_prefect

            os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
            configure_prefect(rt.data_dir)
            slots = WalkSlots
        worker = Worker(rt, concurrency=args.concurrency, lease=args.lease, poll=args.poll,
                        on_skip=lambda text: say(f"worker {rt.machine.id}: {text}"),
                        slots=slots)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            say(f"worker {rt.machine.id}: {signal.Signals(signum).name}: finishing the "
                "snapshots it runs, claiming no more")
            worker.stop()
            signal.signal(signum, signal.SIG_DFL)  # a second one stops at once

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        say(f"worker {rt.machine.id} ({rt.machine.hostname}) joined {rt.store.where}: "
            f"{args.concurrency} at a time, lease {args.lease:g}s, binaries in {rt.lib_dir}")
        installer = _install(rt, args, worker)
        if not worker.stopping.is_set():
            for plugin, why in worker.unavailable().items():
                say(f"worker {rt.machine.id}: plugin {plugin} cannot run on this machine: "
                    f"{why}; its ArchiveResults of the snapshots this worker archives end "
                    "`skipped` (fix: `archiveflow install` on this machine)")
            say(f"worker {rt.machine.id}: claiming snapshots")
        started = time.monotonic()
        report = worker.run()
        results = " ".join(f"{k} {v}" for k, v in sorted(report.results.items())) or "-"
        say(f"worker {rt.machine.id} stopped after {time.monotonic() - started:.1f}s: "
            f"{report.snapshots} snapshots archived (results: {results}), "
            f"{report.handed_back} handed back")
        for plugin, n in sorted(report.skipped.items()):
            say(f"worker {rt.machine.id}: {n} {plugin} result(s) skipped: a binary of it is "
                "missing on this machine")
        for err in report.errors:
            say(f"error: {err}")
        return EXIT_FAILED if report.errors else EXIT_OK
    finally:
        if installer is not None:
            installer.stop()
        rt.close()


def register(command: Command) -> None:
    """Add `worker` and `doctor` (which says whether the shared index answers)."""
    doctor.register(command)
    w = command("worker", cmd_worker,
                "Archive snapshots of every crawl in the shared index on this machine, until "
                "stopped (SIGTERM/Ctrl-C finish what runs). Needs ARCHIVEFLOW_CATALOG. "
                "Installs this machine's binaries first, through its own Prefect deployment "
                "(install_binaries/install-binaries-<machine id>), which it serves.")
    w.add_argument("--concurrency", type=int, default=2,
                   help="snapshots at once on this machine (default 2)")
    w.add_argument("--lease", type=float, default=300.0,
                   help="seconds a claimed snapshot stays this worker's without renewal; "
                   "after a crash another worker takes it then (default 300)")
    w.add_argument("--poll", type=float, default=1.0,
                   help="seconds between looks at the index when idle (default 1)")
    w.add_argument("--binaries-every",
                   help="interval of this machine's binaries install deployment (default 1d)")
    w.add_argument("--no-binaries", action="store_true",
                   help="install nothing at start and serve no install deployment")
