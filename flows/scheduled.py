"""The `archive` flow: a recurring crawl's run.

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
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from archiveflow.flows import context
from archiveflow.flows.crawl import archived_nothing, run_crawl_flow
from archiveflow.store import crawls as crawl_store
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.ids import new_id
from archiveflow.store.records import SnapshotRecord
from archiveflow.tasks.config import hook_timeout
from archiveflow.tasks.hooks import HookLaunchError, run_hook, update_from_output
from archiveflow.tasks.runtime import Runtime
from archiveflow.tasks.schedules import check_deployed_run
from archiveflow.tasks.urls import check_url

FLOW_NAME: Final[str] = "archive"
SEEDS_PLUGIN: Final[str] = "seeds"
TRUTHY: Final[tuple[str, ...]] = ("1", "true", "yes", "on")


class SeedParseError(RuntimeError):
    """The seed source of an only-new run could not be parsed; nothing was archived."""


# --- only-new: drop seeds archived before -------------------------------------------------

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
    seen = snapshot_store.archived_urls(rt.store.cursor(),
                                        sorted({u for u in normal.values() if u}))
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
    _check_deployed_run()
    opened = _open(data_dir)
    try:
        crawl_id = await create_scheduled_crawl({
            "seeds": seeds, "depth": depth, "tags": tags, "plugins": plugins,
            "url_allow": url_allow, "url_deny": url_deny, "max_urls": max_urls,
            "parser": parser, "only_new": only_new, "config": config, "schedule": schedule})
        result = await run_crawl_flow(crawl_id, concurrency=concurrency, data_dir=data_dir)
        print(f"crawl {crawl_id}: {result['snapshots']} snapshots, status {result['status']}")
        if result["failures"]:
            raise RuntimeError(f"crawl {crawl_id}: " + "; ".join(result["failures"]))
        if archived_nothing(result):
            raise RuntimeError(f"crawl {crawl_id} archived nothing: every ArchiveResult failed")
        return result
    finally:
        if opened:
            rt = context.current().rt
            context.uninstall()
            rt.close()  # release the index lock for the next run or the CLI


def _check_deployed_run() -> None:
    """A run of a deployment runs only with its schedule's parameters (tasks/schedules.py):
    checked here, where every run executes, whether `serve` or a Prefect worker started it."""
    from prefect.runtime import deployment, flow_run

    if not deployment.id:
        return  # called directly (tests, `archive(...)` in Python): the caller's own choice
    check_deployed_run(str(deployment.name), dict(flow_run.parameters or {}))


def _open(data_dir: str | None) -> bool:
    """Use the process's runtime, or open one for `data_dir` (True if we opened it)."""
    try:
        context.current()
        return False
    except RuntimeError:
        context.current(data_dir)
        return True
