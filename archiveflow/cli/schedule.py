"""`archiveflow schedule add|list|remove|run` and `archiveflow serve`: recurring crawls.

Schedules live in `<data>/schedules.json` and, as deployments `archive/<name>`, in the
Prefect API (see deployments/crawls.py). `serve` runs them, and the per-machine binaries
deployment, from one long-lived process (Prefect's Runner: each run in a subprocess), and
picks up schedules added or changed while it runs.

"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from archiveflow.cli.common import (
    EXIT_USAGE,
    CliError,
    Command,
    data_folder,
    print_table,
    say,
)
from archiveflow.cli.crawl import add_crawl_options
from archiveflow.cli.stderr_gate import StderrGate

RELOAD_SECONDS: Final[float] = 5.0


def _prefect(data_dir: Path) -> Any:
    from archiveflow.flows.prefect_server import configure_prefect

    try:
        return configure_prefect(data_dir)
    except (OSError, RuntimeError) as e:
        raise CliError(f"cannot reach or start the Prefect API server: {e}") from e


# --- schedule add -------------------------------------------------------------------------

def _seeds(inputs: list[str], allow_private: bool) -> str:
    """A seed file (kept as an absolute path: re-read on every run) or URLs, one a line."""
    from archiveflow.tasks.urls import check_url

    if len(inputs) == 1 and Path(inputs[0]).is_file():
        return str(Path(inputs[0]).resolve())
    bad = []
    for raw in inputs:
        url, reason = check_url(raw, allow_private=allow_private)
        if url is None:
            bad.append(f"{raw!r}: {reason}")
    if bad:
        raise CliError("refused " + "; ".join(bad), EXIT_USAGE)
    if len(inputs) == 1:
        return inputs[0]  # the seed parser fetches a feed/sitemap/bookmarks URL itself
    # As JSONL, like `add`: the text parser would cut a URL at a quote.
    return "\n".join(json.dumps({"url": u}) for u in inputs)


def cmd_add(args: argparse.Namespace) -> int:
    from archiveflow.deployments import crawls as dep

    t0 = time.perf_counter()
    data_dir = data_folder(args).resolve()
    seeds = _seeds(args.inputs, args.allow_private)
    config = dict(kv.split("=", 1) for kv in args.config or [])
    if args.allow_private:
        config["URL_ALLOW_PRIVATE"] = "true"
    if args.scope:
        config["CRAWL_SCOPE"] = args.scope
    params: dict[str, Any] = {
        "seeds": seeds, "depth": args.depth, "tags": args.tag or [], "plugins": args.plugins,
        "url_allow": args.allow, "url_deny": args.deny, "max_urls": args.max_urls,
        "parser": args.parser, "only_new": args.only_new, "concurrency": args.concurrency,
        "config": config,
    }
    try:
        every = dep.parse_every(args.every) if args.every else None
        cron = dep.check_cron(args.cron) if args.cron else None
        name = args.name or dep.default_name(seeds)
        schedule = dep.Schedule(name=name, every_seconds=every, cron=cron,
                                timezone=args.timezone, parameters=params)
        schedules = dep.load_schedules(data_dir)
    except (ValueError, dep.ScheduleError) as e:
        raise CliError(_first(e), EXIT_USAGE) from e
    if name in schedules and not args.replace:
        raise CliError(f"schedule {name} exists ({schedules[name].describe()}): "
                       "give --name, or --replace to change it", EXIT_USAGE)
    _prefect(data_dir)
    # Registered paused: `serve` un-pauses what it serves (see deployments/crawls.py).
    serving = _is_served(data_dir)
    dep_id = asyncio.run(dep.register(schedule, data_dir, paused=not serving))
    schedules[name] = schedule
    dep.save_schedules(data_dir, schedules)
    print(f"schedule {name}: {schedule.describe()}, deployment {dep.full_name(name)} ({dep_id})")
    say(f"saved in {dep.schedules_path(data_dir)} in {time.perf_counter() - t0:.1f}s; "
         + ("the running `archiveflow serve` picks it up" if serving else
            "runs while `archiveflow serve` runs"))
    return 0


def _first(e: Exception) -> str:
    """The first line of a (pydantic) error, without its noise."""
    text = str(e)
    if hasattr(e, "errors"):
        errs = e.errors()
        if errs:
            text = str(errs[0].get("msg", text)).removeprefix("Value error, ")
    return text.splitlines()[0]


# --- schedule list / remove / run ---------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    from archiveflow.deployments import crawls as dep

    data_dir = data_folder(args).resolve()
    schedules = dep.load_schedules(data_dir)
    if not schedules:
        say(f"no schedules in {data_dir}: add one with `archiveflow schedule add`")
        return 0
    info: dict[str, dict[str, Any]] = {}
    if not args.offline:
        _prefect(data_dir)
        info = asyncio.run(dep.deployment_info(sorted(schedules)))
    rows = []
    for name, s in sorted(schedules.items()):
        d = info.get(name)
        state = ("-" if args.offline else "not registered" if d is None else
                 "paused" if d["paused"] else "active")
        nxt = d["next_run"].isoformat(timespec="minutes") if d and d["next_run"] else ""
        p = s.parameters
        rows.append({"name": name, "schedule": s.describe(), "deployment": state,
                     "next_run": nxt, "seeds": p.get("seeds", "").replace("\n", " "),
                     "depth": p.get("depth", 0), "only_new": bool(p.get("only_new")),
                     "plugins": p.get("plugins") or "", "tags": ",".join(p.get("tags") or []),
                     # what every run of archive/<name> must have (tasks/schedules.py)
                     "parameters": {**p, "schedule": name, "data_dir": str(data_dir)}})
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print_table(["name", "schedule", "deployment", "next run", "seeds", "depth",
                     "only new", "plugins", "tags"], [list(r.values())[:-1] for r in rows])
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from archiveflow.deployments import crawls as dep

    data_dir = data_folder(args).resolve()
    schedules = dep.load_schedules(data_dir)
    if args.name not in schedules:
        known = ", ".join(sorted(schedules)) or "none"
        raise CliError(f"no schedule {args.name} in {data_dir} (schedules: {known})")
    _prefect(data_dir)
    deleted = asyncio.run(dep.unregister(args.name))
    del schedules[args.name]
    dep.save_schedules(data_dir, schedules)
    print(f"schedule {args.name} removed" + ("" if deleted else
                                              " (its deployment was already gone)"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from archiveflow.deployments import crawls as dep

    data_dir = data_folder(args).resolve()
    if args.name not in dep.load_schedules(data_dir):
        raise CliError(f"no schedule {args.name} in {data_dir}")
    _prefect(data_dir)
    run_id = asyncio.run(dep.trigger(args.name))
    print(f"flow run {run_id} of {dep.full_name(args.name)} created"
          + ("" if _is_served(data_dir) else "; it starts when `archiveflow serve` runs"))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    return int(args.schedule_fn(args))


# --- serve --------------------------------------------------------------------------------

def _serve_pid_file(data_dir: Path) -> Path:
    return data_dir / "prefect" / "serve.json"


def _is_served(data_dir: Path) -> bool:
    """Whether an `archiveflow serve` of this data folder is running (pid identity)."""
    import psutil

    try:
        info = json.loads(_serve_pid_file(data_dir).read_text())
        proc = psutil.Process(info["pid"])
        return abs(proc.create_time() - info["create_time"]) < 1.0
    except (OSError, ValueError, KeyError, psutil.Error):
        return False


def _binaries_deployment(data_dir: Path, every: str | None) -> Any:
    """The per-machine install deployment, when deployments/binaries.py is there."""
    try:
        from archiveflow.deployments.binaries import binaries_deployment
    except ImportError as e:
        say(f"serve: no per-machine binaries deployment ({e})")
        return None
    from archiveflow.deployments.crawls import parse_every

    return binaries_deployment(data_dir, interval=parse_every(every) if every else None)


async def _serve(data_dir: Path, args: argparse.Namespace, t0: float,
                 gate: StderrGate | None = None) -> None:
    import psutil

    from archiveflow.deployments import crawls as dep
    from archiveflow.deployments.runner import ServeRunner
    from archiveflow.flows.limits import plugin_limit

    # Prefect's shutdown cancels the running flow runs (they end Cancelled, with their logs
    # in the API); their subprocesses' crash reports are not shown (see stderr_gate.py).
    runner = ServeRunner(name=f"archiveflow-serve-{os.getpid()}", limit=args.limit,
                         query_seconds=args.poll, pause_on_shutdown=True,
                         on_stop=gate.shut if gate is not None else say, on_refused=say)
    schedules = dep.load_schedules(data_dir)
    for s in schedules.values():
        await runner.serve_deployment(dep.crawl_deployment(s, data_dir))
    names = [dep.full_name(n) for n in sorted(schedules)]
    if not args.no_binaries:
        bins = _binaries_deployment(data_dir, args.binaries_every)
        if bins is not None:
            await runner.serve_deployment(bins)
            names.append(f"install_binaries/{bins.name}")
    if not names:
        raise CliError(f"nothing to serve in {data_dir}: add a schedule first")
    # Created up front so they show (and can be resized) in the UI before the first use.
    from archiveflow.flows.limits import ensure_limit

    limit = plugin_limit("screenshot", {})
    if limit is not None:
        await ensure_limit(*limit)
    pid_file = _serve_pid_file(data_dir)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(json.dumps({"pid": os.getpid(),
                                    "create_time": psutil.Process().create_time()}))
    say(f"serving {len(names)} deployment(s) after {time.perf_counter() - t0:.1f}s: "
         + ", ".join(names) + f" (at most {args.limit} run(s) at once; Ctrl-C stops)")
    try:
        reload = asyncio.create_task(_reload(runner, data_dir, schedules))
        try:
            if threading.current_thread() is threading.main_thread():
                # Ctrl-C takes the same way out as SIGTERM (runner.start sets SIGTERM's).
                signal.signal(signal.SIGINT, runner.handle_sigterm)
            await runner.start()
        finally:
            reload.cancel()
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()


async def _reload(runner: Any, data_dir: Path, served: dict[str, Any]) -> None:
    """Serve schedules added or changed in schedules.json while we run."""
    from archiveflow.deployments import crawls as dep

    path = dep.schedules_path(data_dir)
    seen = path.stat().st_mtime_ns if path.exists() else 0
    while True:
        await asyncio.sleep(RELOAD_SECONDS)
        mtime = path.stat().st_mtime_ns if path.exists() else 0
        if mtime == seen:
            continue
        seen = mtime
        try:
            now = dep.load_schedules(data_dir)
        except (ValueError, dep.ScheduleError) as e:
            say(f"serve: {e}; keeping the schedules served so far")
            continue
        for name, s in now.items():
            if served.get(name) != s:
                await runner.serve_deployment(dep.crawl_deployment(s, data_dir))
                say(f"serve: now serving {dep.full_name(name)} ({s.describe()})")
        served.clear()
        served.update(now)


def cmd_serve(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from archiveflow.deployments.runner import GuardUnavailable

    data_dir = data_folder(args).resolve()
    rt = _prefect(data_dir)
    say(f"Prefect API {rt.api_url} ({rt.mode}); {rt.ui_line()}")
    gate = StderrGate()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(data_dir, args, t0, gate))
    except GuardUnavailable as e:
        raise CliError(f"serve: {e}") from e
    finally:
        gate.restore()
    return 0


# --- parser -------------------------------------------------------------------------------

def _sub(parent: argparse._SubParsersAction, name: str, fn: Callable[[argparse.Namespace], int],
         helptext: str) -> argparse.ArgumentParser:
    sp = parent.add_parser(name, help=helptext, description=helptext)
    sp.add_argument("--data-dir", default=argparse.SUPPRESS,
                    help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
    sp.set_defaults(schedule_fn=fn)
    return sp


def register(command: Command) -> None:
    """Add `schedule` and `serve` to the archiveflow parser."""

    s = command("schedule", cmd_schedule, "Recurring crawls: add, list, remove, run now.")
    sub = s.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")

    a = _sub(sub, "add", cmd_add, "Add a recurring crawl (a Prefect deployment with a "
             "schedule).")
    a.add_argument("inputs", nargs="+", metavar="URL|FILE",
                   help="URLs, a feed/sitemap/bookmarks URL, or a seed file (re-read each run)")
    when = a.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval: 30m, 12h, 1d, 1w")
    when.add_argument("--cron", help='cron string, e.g. "0 3 * * *"')
    a.add_argument("--timezone", help="time zone of --cron (default UTC), e.g. Europe/Paris")
    a.add_argument("--name", help="schedule name (default: from the first seed)")
    a.add_argument("--replace", action="store_true", help="change an existing schedule")
    a.add_argument("--only-new", action="store_true",
                   help="archive only seeds never archived in this data folder (feeds); "
                   "default: every run captures every seed again")
    add_crawl_options(a, per="run")

    ls = _sub(sub, "list", cmd_list, "Schedules of the data folder, with their deployments.")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--offline", action="store_true",
                    help="read schedules.json only; do not ask the Prefect API")

    rm = _sub(sub, "remove", cmd_remove, "Remove a schedule and its deployment.")
    rm.add_argument("name")

    rn = _sub(sub, "run", cmd_run, "Start a run of a schedule now (served by `serve`).")
    rn.add_argument("name")

    sv = command("serve", cmd_serve, "Run every schedule (and the per-machine "
                 "binaries install) until stopped; runs show in the Prefect UI.")
    sv.add_argument("--limit", type=int, default=1,
                    help="runs at once (default 1: one process writes the index at a time)")
    sv.add_argument("--poll", type=float, default=5.0,
                    help="seconds between checks for due runs (default 5)")
    sv.add_argument("--no-binaries", action="store_true",
                    help="do not serve the per-machine binaries install deployment")
    sv.add_argument("--binaries-every", help="interval of the binaries install (default 1d)")
