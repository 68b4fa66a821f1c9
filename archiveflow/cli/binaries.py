"""`archiveflow install` and `archiveflow binaries`: this Machine's binaries.

"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from archiveflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Command,
    open_index,
    print_table,
    say,
)

TABLE_HEADERS = ["name", "status", "provider", "version", "path", "error"]


def _short_error(text: str | None) -> str:
    """Every provider's reason on one line (the table cuts it; the full text follows)."""
    return "; ".join(ln.strip() for ln in (text or "").splitlines() if ln.strip())


def _providers_tried(text: str | None) -> str:
    return ", ".join(ln.split(":", 1)[0] for ln in (text or "").splitlines() if ":" in ln)


class InstallProgress:
    """One line per binary as its row moves (started, succeeded, failed), from the index."""

    def __init__(self, rt: Any, names: list[str], interval: float = 0.2,
                 out: Any = None) -> None:
        self.rt, self.names, self.interval = rt, names, interval
        self.out = out or sys.stderr
        self._seen: dict[str, tuple[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.monotonic()

    def poll(self) -> None:
        from archiveflow.store.binaries import list_binaries

        rows = list_binaries(self.rt.store.cursor(), self.rt.machine.id, self.names)
        for row in rows:
            key = (row["status"], row["modified_at"])
            before = self._seen.get(row["name"])
            self._seen[row["name"]] = key
            if before is None or before == key:
                continue
            self.say(row)

    def say(self, row: dict[str, Any]) -> None:
        status = row["status"]
        if status == "succeeded":
            what = f"{row['binprovider']} {row['version'] or '?'} {row['abspath']}"
        elif status == "failed":
            what = f"by every provider ({_providers_tried(row['error'])}), reasons below"
        else:
            what = f"trying {row['bin_providers']}" if status == "started" else ""
        print(f"[{time.monotonic() - self.started:6.1f}s] {row['name']}: {status} {what}"
              .rstrip(), file=self.out, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - progress must never break an install
                continue

    def __enter__(self) -> InstallProgress:
        self.poll()  # the rows as they were: only later moves are printed
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.poll()
        except Exception:  # noqa: BLE001
            pass


def run_install(rt: Any, plugins: list[str] | None, force: bool) -> dict[str, Any]:
    """Run the install_binaries flow in this process with a progress line per binary."""
    from archiveflow.flows import context
    from archiveflow.flows.binaries import install_binaries
    from archiveflow.flows.prefect_server import configure_prefect
    from archiveflow.tasks.binaries import declared_binaries

    names = [d["name"] for d in declared_binaries(rt, plugins)]
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    configure_prefect(rt.data_dir)
    context.install(rt)
    try:
        with InstallProgress(rt, names):
            return asyncio.run(install_binaries(plugins=plugins, force=force))
    finally:
        context.uninstall()


def cmd_install(args: argparse.Namespace) -> int:
    from archiveflow.tasks import crawls

    plugins = [p.strip() for p in args.plugins.split(",") if p.strip()] if args.plugins \
        else None
    rt = open_index(args)
    try:
        # Rows a killed install left `started` would otherwise wait out their lease.
        crawls.expire_stale(rt)
        if plugins:
            unknown = sorted(set(plugins) - set(rt.plugin_dirs()))
            if unknown:
                raise CliError(f"no plugin named {', '.join(unknown)}; known plugins: "
                               f"{', '.join(sorted(rt.plugin_dirs()))}", EXIT_USAGE)
        say(f"machine {rt.machine.hostname} ({rt.machine.id}): installing the binaries of "
             f"{', '.join(plugins) if plugins else 'every enabled plugin'} into {rt.lib_dir}")
        if plugins:  # and of the plugins they require (abx's title → chrome), as a crawl does
            plugins = crawls.crawl_hook_plugins(rt, {"plugins": ",".join(plugins)})
        summary = run_install(rt, plugins, args.force)
        for conflict in summary["conflicts"]:
            say(f"note: {conflict}")
        for name, why in summary["requeued"].items():
            say(f"note: {name} installed again: {why}")
        rows = summary["rows"]
        if not rows:
            say("no enabled plugin declares a binary")
            return EXIT_OK
        print_table(TABLE_HEADERS, [
            (r["name"], r["status"], r["binprovider"], r["version"], r["abspath"],
             _short_error(r["error"])) for r in rows])
        failed = [r for r in rows if r["status"] != "succeeded"]
        for r in failed:
            say(f"{r['name']} {r['status']}:")
            for line in (r["error"] or "no error recorded").splitlines():
                say(f"  {line}")
        say(f"{len(rows) - len(failed)}/{len(rows)} binaries ready, "
             f"{summary['hooks_started']} provider hook(s) run in {summary['seconds']:.1f}s")
        return EXIT_FAILED if failed else EXIT_OK
    finally:
        rt.close()


def cmd_binaries(args: argparse.Namespace) -> int:
    from archiveflow.store.queries import machine_binaries
    from archiveflow.tasks.machine import this_machine

    machine = this_machine()
    # Read through the writer when a crawl holds the index.
    with open_index(args, read_only=True) as reader:
        rows = machine_binaries(reader, machine.id)
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return EXIT_OK
    if not rows:
        say(f"no binaries recorded for machine {machine.hostname} ({machine.id}) yet: "
             "run `archiveflow install`")
        return EXIT_OK
    print_table(TABLE_HEADERS, [
        (r["name"], r["status"], r["provider"], r["version"], r["path"],
         _short_error(r["error"])) for r in rows])
    return EXIT_OK


def register(command: Command) -> None:
    """Add `install` and `binaries`."""
    i = command("install", cmd_install,
                "Install the binaries the enabled plugins declare, on this machine.")
    i.add_argument("--plugins", help="only the binaries of these plugins, comma-separated")
    i.add_argument("--force", action="store_true",
                   help="resolve every binary again, even those installed and unchanged")
    b = command("binaries", cmd_binaries, "This machine's binaries: provider, version, path.")
    b.add_argument("--json", action="store_true", help="one JSON object per line")
