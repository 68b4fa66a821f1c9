"""The `archive` flow (a recurring crawl's run) and Prefect global concurrency limits.

`archive(seeds, …)` creates a new Crawl from its parameters (with `schedule` = the
deployment's name) and awaits the `crawl` flow as a subflow. deployments/crawls.py makes
one Prefect deployment of it per schedule.

Re-archiving semantics, explicit:

* default: every run is a new Crawl that makes a new Snapshot of every seed, so a URL
  gets one capture per run (captures over time);
* ``only_new=True`` (for feeds): before the Crawl is created, the `seeds` plugin's
  on_Crawl hook parses the source into a scratch folder; items whose URL already has a
  Snapshot in this data folder are dropped, and the Crawl's seeds become a JSONL file of
  the remaining items (titles, dates and tags kept). The crawl then runs unchanged. Why
  here and not in the record ingest: the crawl flow claims Snapshots right after its
  on_Crawl hooks, so there is no race-free point to delete them from outside, and
  tasks/ingest.py cannot import this layer. The cost is one extra run of the seeds hook.

Global concurrency limits (:func:`limit_slot`) are Prefect's, so they hold across every
process and machine that reports to the same API, and show (and can be changed) in the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.flows import context
from archiveflow.store import crawls as crawl_store
from archiveflow.store.ids import new_id
from archiveflow.store.records import SnapshotRecord
from archiveflow.tasks.config import hook_timeout
from archiveflow.tasks.hooks import HookLaunchError, run_hook, update_from_output
from archiveflow.tasks.runtime import Runtime
from archiveflow.tasks.urls import check_url
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

FLOW_NAME: Final[str] = "archive"
SEEDS_PLUGIN: Final[str] = "seeds"
BROWSER_LIMIT: Final[str] = "archiveflow-browser"
DEFAULT_BROWSER_PLUGINS: Final[str] = "screenshot,chrome,pdf,dom,singlefile"
TRUTHY: Final[tuple[str, ...]] = ("1", "true", "yes", "on")


class SeedParseError(RuntimeError):
    """The seed source of an only-new run could not be parsed; nothing was archived."""


# --- only-new: drop seeds archived before -------------------------------------------------

def archived_urls(rt: Runtime, urls: list[str]) -> set[str]:
    """The subset of `urls` that has a Snapshot (in any crawl) in this data folder."""
    if not urls:
        return set()
    # One set-based lookup; belongs in store/snapshots.py (owned elsewhere) when it moves.
    rows = rt.store.cursor().execute(
        "SELECT DISTINCT url FROM snapshot WHERE url IN (SELECT unnest(?::VARCHAR[]))",
        [urls]).fetchall()
    return {r[0] for r in rows}


def new_seeds_file(rt: Runtime, seeds: str, parser: str | None, config: Mapping[str, str],
                   schedule: str | None) -> tuple[Path, int, int]:
    """Parse `seeds` with the seeds hook; write the never-archived items as JSONL.

    Returns (file, items in the source, items kept). Raises SeedParseError when the
    source is malformed or unreachable (the crawl is then not created at all)."""
    cfg = rt.config(config)
    hooks = [h for h in rt.hooks("Crawl", cfg, [SEEDS_PLUGIN]) if not h.is_background]
    if not hooks:
        raise SeedParseError("only_new needs the seeds plugin, and it is disabled")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work_dir = rt.data_dir / "schedules" / (schedule or "adhoc") / f"{stamp}-{new_id()[-8:]}"
    work_dir.mkdir(parents=True, exist_ok=True)
    source = seeds
    if "\n" in seeds:
        (work_dir / "seeds.txt").write_text(seeds, encoding="utf-8")
        source = str(work_dir / "seeds.txt")
    args = {"url": seeds.strip().splitlines()[0][:2000] if seeds.strip() else "",
            "crawl_id": "", "source_url": source}
    if parser:
        args["parser"] = parser
    records: list[SnapshotRecord] = []
    env = rt.hook_env(cfg, crawl_dir=work_dir)
    for hook in hooks:
        try:
            run = run_hook(hook, args=args, output_dir=work_dir, env=env,
                           timeout=hook_timeout(hook, cfg))
        except HookLaunchError as e:
            raise SeedParseError(f"{hook.name} cannot start: {e}") from e
        outcome = update_from_output(run, output_dir=work_dir, snapshot_dir=work_dir)
        if outcome.status == "failed":
            raise SeedParseError(f"{hook.plugin}: {outcome.error or 'failed'}")
        records.extend(r for r in outcome.other_records if isinstance(r, SnapshotRecord))
    allow_private = cfg.get("URL_ALLOW_PRIVATE", "false").lower() in TRUTHY
    allow_file = cfg.get("URL_ALLOW_FILE", "false").lower() in TRUTHY
    # Compare normalized URLs: the ingest stores check_url's form, not the raw one.
    normal = {r.url: check_url(r.url, allow_private=allow_private, allow_file=allow_file)[0]
              for r in records}
    seen = archived_urls(rt, sorted({u for u in normal.values() if u}))
    kept = [r for r in records if normal[r.url] not in seen]
    out = work_dir / "new_seeds.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for r in kept:
            fh.write(json.dumps({
                "url": r.url, "title": r.title, "tags": r.tag_list(),
                "bookmarked_at": r.bookmarked_at.isoformat() if r.bookmarked_at else None,
            }, ensure_ascii=False) + "\n")
    return out, len(records), len(kept)


# --- the flow -----------------------------------------------------------------------------

@task(name="create-crawl", cache_policy=NO_CACHE, persist_result=False)
async def create_scheduled_crawl(params: dict[str, Any]) -> str:
    """Insert the queued Crawl of this run (with only_new: of its new items only)."""
    rt = context.current().rt
    seeds, parser = params["seeds"], params.get("parser")
    config = {str(k): str(v) for k, v in (params.get("config") or {}).items()}
    label = None
    if params.get("only_new"):
        path, total, kept = await asyncio.to_thread(
            new_seeds_file, rt, seeds, parser, config, params.get("schedule"))
        get_run_logger().info("only new: %d of %d items never archived here", kept, total)
        label = f"new items of {seeds.strip()[:200]}"
        config["ONLY_NEW_SOURCE"] = seeds.strip()[:2000]
        seeds, parser = str(path), "jsonl"
    row = await asyncio.to_thread(
        crawl_store.create_crawl, rt.store.cursor(), seeds=seeds,
        max_depth=int(params.get("depth") or 0), tags=",".join(params.get("tags") or []),
        plugins=params.get("plugins"), url_allow=params.get("url_allow"),
        url_deny=params.get("url_deny"), max_urls=params.get("max_urls"), parser=parser,
        label=label, schedule=params.get("schedule"), config=config,
        machine_id=rt.machine.id)
    return str(row["id"])


@flow(name=FLOW_NAME, persist_result=False, validate_parameters=False, log_prints=True)
async def archive(
    seeds: str,
    depth: int = 0,
    tags: list[str] | None = None,
    plugins: str | None = None,
    url_allow: str | None = None,
    url_deny: str | None = None,
    max_urls: int | None = None,
    parser: str | None = None,
    only_new: bool = False,
    concurrency: int = 4,
    config: dict[str, str] | None = None,
    schedule: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Create a new Crawl of `seeds` with these options and run it (a recurring crawl's run).

    `seeds`: URLs (one per line), a file path, or a feed/sitemap/bookmarks URL.
    `only_new`: archive only seeds whose URL has no Snapshot in this data folder yet.
    `schedule`: the schedule (deployment) name, kept on the Crawl row."""
    # Imported here: flows.snapshot imports this module for limit_slot (a cycle otherwise).
    from archiveflow.flows.crawl import crawl_flow

    opened = _open(data_dir)
    try:
        crawl_id = await create_scheduled_crawl({
            "seeds": seeds, "depth": depth, "tags": tags, "plugins": plugins,
            "url_allow": url_allow, "url_deny": url_deny, "max_urls": max_urls,
            "parser": parser, "only_new": only_new, "config": config, "schedule": schedule})
        result = await crawl_flow(crawl_id, concurrency=concurrency, data_dir=data_dir)
        print(f"crawl {crawl_id}: {result['snapshots']} snapshots, status {result['status']}")
        if result["failures"]:
            raise RuntimeError(f"crawl {crawl_id}: " + "; ".join(result["failures"]))
        return result
    finally:
        if opened:
            rt = context.current().rt
            context.uninstall()
            rt.close()  # release the index lock for the next run or the CLI


def _open(data_dir: str | None) -> bool:
    """Use the process's runtime, or open one for `data_dir` (True if we opened it)."""
    try:
        context.current()
        return False
    except RuntimeError:
        context.current(data_dir)
        return True


# --- global concurrency limits ------------------------------------------------------------

_ensured: set[str] = set()
_ensure_locks: dict[int, asyncio.Lock] = {}  # per event loop: a Lock is bound to one


def plugin_limit(plugin: str, config: Mapping[str, str]) -> tuple[str, int] | None:
    """(limit name, slots) of the global limit a plugin's hook runs hold, or None.

    Browser plugins (config BROWSER_PLUGINS, comma-separated) share BROWSER_LIMIT with
    BROWSER_CONCURRENCY slots (default 1): one headless browser at a time on the API."""
    names = config.get("BROWSER_PLUGINS") or DEFAULT_BROWSER_PLUGINS
    if plugin not in {p.strip() for p in names.split(",")}:
        return None
    try:
        slots = int(config.get("BROWSER_CONCURRENCY") or 1)
    except ValueError:
        slots = 1
    return BROWSER_LIMIT, max(1, slots)


async def ensure_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit `name` if the API has none by that name.

    An existing limit is left alone: its size may have been changed in the UI. Prefect's
    `concurrency()` silently does nothing for a limit that does not exist, hence this."""
    if name in _ensured:
        return
    lock = _ensure_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
    async with lock:  # the tasks of one process ask the API once, not all at once
        if name not in _ensured:
            await _create_if_missing(name, slots)
            _ensured.add(name)


async def _create_if_missing(name: str, slots: int) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another process won the race
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=slots))


@contextlib.asynccontextmanager
async def limit_slot(name: str | None, slots: int = 1,
                     timeout_seconds: float | None = None) -> AsyncIterator[None]:
    """Hold one slot of the global concurrency limit `name` (created with `slots` if new).

    `name=None` holds nothing, so callers can write
    ``async with limit_slot(*(plugin_limit(p, cfg) or (None,))):``."""
    if name is None:
        yield
        return
    from prefect.concurrency.asyncio import concurrency

    await ensure_limit(name, slots)
    async with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        yield


_ensured_sync = threading.Lock()


@contextlib.contextmanager
def hook_slot(plugin: str, config: Mapping[str, str]) -> Iterator[None]:
    """Synchronous form for plain-Python work in a thread (tasks/work.run_snapshot): hold
    the plugin's global limit slot (see plugin_limit) around a hook run, or nothing."""
    limit = plugin_limit(plugin, config)
    if limit is None:
        yield
        return
    from prefect.concurrency.sync import concurrency
    from prefect.utilities.asyncutils import run_coro_as_sync

    name, slots = limit
    if name not in _ensured:
        with _ensured_sync:
            if name not in _ensured:
                run_coro_as_sync(_create_if_missing(name, slots))
                _ensured.add(name)
    with concurrency(name, occupy=1, strict=True):
        yield
