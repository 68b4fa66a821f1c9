"""`archiveflow update`: run the failed ArchiveResults of existing snapshots again.

ArchiveBox users run `archivebox update` for this. The matching results go back to `queued`
(store/results.requeue_for_update: failed → queued through the transitions table, their
snapshots and crawls sealed → queued), and each crawl they belong to is re-opened and run
through the normal crawl path (`run_crawl`): the same flow, progress line, Prefect runs and
summary table as `add`.

Why re-open the crawl rather than group the update under a new crawl row: a Snapshot belongs
to its crawl (its folder, its config, its depth and URL limits, its crawl-wide services such
as the browser), and the crawl's on_Crawl hooks are what start those services. Its seed
parser runs again too, but finds only URLs the crawl already has. Results that succeeded are
never touched; a hook's earlier runs stay on disk as `<stem>.attempt<N>.*`, and the row's
`attempts` counts every run.
"""

from __future__ import annotations

import argparse
from typing import Any

from archiveflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    CliError,
    Command,
    open_index,
    say,
)
from archiveflow.cli.crawl import run_crawl, summarize

STATUSES = ("failed", "noresults", "skipped")


def _plugins(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [p.strip() for p in raw.split(",") if p.strip()]
    if not names:
        raise CliError("--plugins takes plugin names, comma-separated", EXIT_USAGE)
    return names


def exit_code(counts: dict[str, int]) -> int:
    """README's exit codes for an update: 0 when no re-run result failed again, 1 when
    every one did, 3 when some did."""
    failed = counts.get("failed", 0)
    if failed == 0:
        return EXIT_OK
    return EXIT_FAILED if failed == sum(counts.values()) else EXIT_PARTIAL


def cmd_update(args: argparse.Namespace) -> int:
    from archiveflow.store import results
    from archiveflow.tasks import crawls as crawl_work

    plugins = _plugins(args.plugins)
    rt = open_index(args)
    try:
        crawl_work.expire_stale(rt)
        with rt.store.transaction() as cur:
            moved = results.requeue_for_update(
                cur, status=args.status, crawl_id=args.crawl, plugins=plugins,
                url_contains=args.url_contains)
        if not moved["results"]:
            say(f"nothing to update: no {args.status} result matches in a finished crawl")
            return EXIT_OK
        say(f"updating {len(moved['results'])} {args.status} result(s) of "
            f"{len(moved['snapshots'])} snapshot(s) in {len(moved['crawls'])} crawl(s)")
        failures: list[str] = []
        for crawl_id in moved["crawls"]:
            outcome: dict[str, Any] = run_crawl(rt, crawl_id, args.concurrency)
            failures.extend(outcome["failures"])
            summarize(rt, crawl_id)
        for failure in failures:
            say(f"error: {failure.splitlines()[0] if failure else 'failed'}")
        counts = results.status_counts(rt.store.cursor(), moved["results"])
        say("updated: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return exit_code(counts)
    finally:
        rt.close()


def register(command: Command) -> None:
    """Add `update`."""
    u = command("update", cmd_update,
                "Run the failed ArchiveResults of existing snapshots again.")
    u.add_argument("--crawl", metavar="ID", help="only this crawl's snapshots")
    u.add_argument("--plugins", help="only these plugins' results, comma-separated")
    u.add_argument("--status", choices=STATUSES, default="failed",
                   help="re-run results in this status (default failed)")
    u.add_argument("--url-contains", metavar="TEXT",
                   help="only snapshots whose URL contains TEXT")
    u.add_argument("--concurrency", type=int, default=4, help="snapshots at once (default 4)")
