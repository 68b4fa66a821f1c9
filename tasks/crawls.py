"""The Crawl model: claim, run its on_Crawl hooks, clean up, seal.

Crawl: queued → started → sealed (store/transitions.py).

- `run` (queued → started): the on_Crawl hooks (seed parsing, set-up, crawl-wide background
  services); their records go through `process_hook_records()`, which creates the depth-0
  Snapshots (the crawl's children), in batches of BATCH records, one transaction each (a
  2M-line URL list loads in bounded memory, with progress). URLs refused and invalid record
  lines are stored in `record_error` against the crawl (owner_id = crawl id).
  `input_only=True` (`add --index-only`) runs only the input parser's hooks.
- `is_finished`: no Snapshot of the crawl is queued or started.
- `cleanup` (started → sealed): stop the crawl's background hooks, run its on_CrawlEnd
  hooks; `seal` then moves the row.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from archiveflow.store import crawls as crawl_store
from archiveflow.store import transitions
from archiveflow.store.transitions import expire_leases
from archiveflow.tasks.config import hook_timeout, load_plugin_config
from archiveflow.tasks.hooks import (
    Hook,
    HookLaunchError,
    HookPaths,
    HookRun,
    finalize_background,
    kill_process,
    kill_unrecorded,
    process_is_alive,
    run_hook,
    update_from_output,
)
from archiveflow.tasks.runtime import Runtime

if TYPE_CHECKING:
    from archiveflow.tasks.ingest import Context, IngestReport

# What loading the on_Crawl hooks' records and starting the first snapshots import (polars
# and the store's bulk-load modules). Nothing before the first hook needs them: `run` imports
# them in a thread while the first on_Crawl hooks run (hook processes: the thread has the
# GIL to itself), and joins it before the records are loaded. Kept off this module's imports
# for that reason. Not pyarrow: the store hands DuckDB Arrow C streams (store/load.scan),
# so a crawl never needs it (≈70 MB of RSS; bench/README.md #18, helper mem).
CRAWL_MODULES: Final[tuple[str, ...]] = (
    "polars",
    "archiveflow.store.load", "archiveflow.store.results", "archiveflow.store.snapshots",
    "archiveflow.store.processes", "archiveflow.tasks.ingest", "archiveflow.tasks.recorder",
    "archiveflow.tasks.snapshots", "archiveflow.tasks.feed", "archiveflow.flows.context",
    "archiveflow.flows.head_start",
)


def import_crawl_modules() -> threading.Thread:
    """Import CRAWL_MODULES in a daemon thread (join it before using them)."""

    def run() -> None:
        for name in CRAWL_MODULES:
            with contextlib.suppress(ImportError):  # then the joining thread's import says
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="archiveflow-imports", daemon=True)
    thread.start()
    return thread

LEASE: Final[float] = 6 * 3600.0  # s a claimed Crawl, Snapshot or ArchiveResult is held
# Records of an on_Crawl hook loaded per transaction: 25k seed URLs ≈ 1 s of work and
# ≈ 25 MB of record models held (each batch's anti-join reads the crawl's URLs once, so
# fewer, larger batches cost less DuckDB time and more memory).
BATCH: Final[int] = 25_000
# DuckDB's memory limit while a crawl hook's records load in more than one batch (see
# store.snapshots.bounded_memory): the importing process stays near 400 MB at 2M URLs.
IMPORT_MEMORY_MB: Final[int] = 128
ARG_INLINE_MAX: Final[int] = 8 * 1024  # longer seed text goes through a file
_URLISH = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"]+""")  # not into JSON quotes
_TRUTHY: Final[tuple[str, ...]] = ("true", "1", "yes", "on")


def config_of(row: dict[str, Any]) -> dict[str, Any]:
    """A Crawl's or Snapshot's own config (a JSON column)."""
    value = row.get("config")
    if isinstance(value, dict):
        return value
    return json.loads(value) if value else {}


def iso(value: Any) -> Any:
    """A timestamp as ISO text (for the JSON files beside the outputs); else the value."""
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class UrlPolicy:
    """What a crawl's config allows of a URL (its records' filter, `add`'s URL check)."""

    allow_private: bool
    allow_file: bool
    scope: str


def url_policy(rt: Runtime, crawl: dict[str, Any]) -> UrlPolicy:
    """The crawl's URL policy, from its layered config."""
    cfg = rt.config(config_of(crawl))
    return UrlPolicy(allow_private=cfg.get("URL_ALLOW_PRIVATE", "False").lower() in _TRUTHY,
                     allow_file=cfg.get("URL_ALLOW_FILE", "False").lower() in _TRUTHY,
                     scope=cfg.get("CRAWL_SCOPE") or "host")


def crawl_context(rt: Runtime, crawl: dict[str, Any],
                  snapshot: dict[str, Any] | None = None) -> Context:
    """The filter context of records printed under this crawl (and snapshot)."""
    from archiveflow.tasks.ingest import Context

    policy = url_policy(rt, crawl)
    return Context(crawl=crawl, snapshot=snapshot, machine_id=rt.machine.id,
                   allow_private=policy.allow_private, allow_file=policy.allow_file,
                   scope=policy.scope)


def plugin_list(crawl: dict[str, Any]) -> list[str] | None:
    """The crawl's plugin allow-list (None: every enabled plugin)."""
    raw = crawl.get("plugins")
    return [p.strip() for p in raw.split(",") if p.strip()] if raw else None


# The crawl's input parser runs whatever `--plugins` selects: without it there are no URLs.
INPUT_PLUGINS: Final[frozenset[str]] = frozenset({"seeds"})


def crawl_hook_plugins(rt: Runtime, crawl: dict[str, Any]) -> list[str] | None:
    """Plugins whose on_Crawl hooks this crawl runs (None: every enabled plugin): the
    selected ones, what they require (config.json `required_plugins`, transitively), and
    the input parser. A crawl of `--plugins headers` starts no browser."""
    selected = plugin_list(crawl)
    if selected is None:
        return None
    folders = rt.plugin_dirs(rt.config(config_of(crawl)))
    wanted = set(INPUT_PLUGINS)
    todo = list(selected)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        if name in folders:
            todo.extend(load_plugin_config(folders[name]).required_plugins)
    return sorted(wanted)


@dataclass
class CrawlStart:
    """A claimed crawl and what its on_Crawl hooks did: snapshots created, URLs refused,
    hooks that failed, background hooks still running."""

    crawl: dict[str, Any]
    created: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # the first ones, shown
    failures: list[str] = field(default_factory=list)
    background: list[HookRun] = field(default_factory=list)
    refused_count: int = 0  # every refused URL, also past the ones in `refused`
    invalid: int = 0  # record lines that were no valid record


def expire_stale(rt: Runtime) -> int:
    """After a crash: expire the leases of rows a dead process held; returns how many.

    Safe because a local index has one writer at a time: if we could open it, no other
    process is working on it."""
    return expire_leases(rt.store.cursor())


def claim(rt: Runtime, crawl_id: str) -> dict[str, Any]:
    """queued → started (or reclaim a started crawl whose worker died)."""
    return crawl_store.claim_crawl(rt.store.cursor(), crawl_id, lease=LEASE)


def _seed_args(rt: Runtime, crawl: dict[str, Any]) -> dict[str, str]:
    """argv of the on_Crawl hooks; long or multi-line seed text goes through a file."""
    crawl_dir = rt.data_dir / crawl["output_dir"]
    seeds: str = crawl["seeds"]
    source = seeds
    if len(seeds) > ARG_INLINE_MAX or "\n" in seeds:
        src = crawl_dir / "sources" / "seeds.txt"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(seeds, encoding="utf-8")
        source = str(src)
    m = _URLISH.search(seeds) if len(seeds) < 1_000_000 else None
    args = {"url": m.group(0) if m else seeds.strip()[:2000], "crawl_id": crawl["id"],
            "source_url": source}
    if crawl.get("parser"):
        args["parser"] = crawl["parser"]
    return args


# The input parser's time limit grows with a local input file: 1 s more per this many
# bytes (a 121 MB, 2M-line list parsed in ~50 s on a quiet 2-core machine, ~4x that busy;
# SEEDS_TIMEOUT alone, 60 s, killed it).
INPUT_BYTES_PER_S: Final[int] = 256 * 1024


def _input_timeout(hook: Hook, cfg: dict[str, str], args: dict[str, str]) -> float:
    """The hook's timeout; for the input parser, plus time for the size of a local file."""
    timeout = hook_timeout(hook, cfg)
    if hook.plugin in INPUT_PLUGINS:
        with contextlib.suppress(OSError, ValueError):
            timeout += Path(args["source_url"]).stat().st_size / INPUT_BYTES_PER_S
    return timeout


def requeue(rt: Runtime, crawl: dict[str, Any]) -> dict[str, Any]:
    """started → queued: the crawl's snapshots are indexed, archiving them is left for
    `resume` (`add --index-only`)."""
    return transitions.move(rt.store.cursor(), "crawl", "requeue", crawl["id"])[0]


def _refusal_rows(crawl_id: str, hook_name: str, rep: IngestReport) -> list[dict[str, Any]]:
    rows = [{"owner_id": crawl_id, "hook_name": hook_name, "line": url[:2000],
             "error": reason} for url, reason in rep.refused]
    more = rep.refused_count - len(rep.refused)
    if more > 0:  # past the ones kept one by one: counted by kind of reason
        kinds = "; ".join(f"{n} × {why}" for why, n in rep.refused_reasons.most_common(20))
        rows.append({"owner_id": crawl_id, "hook_name": hook_name,
                     "line": f"[{more} more refused URLs, not stored one by one]",
                     "error": kinds})
    return rows


def run(rt: Runtime, crawl: dict[str, Any], *, input_only: bool = False,
        progress: Callable[[IngestReport], None] | None = None) -> CrawlStart:
    """Run the claimed crawl's on_Crawl hooks and process their records (depth-0
    Snapshots) in batches, calling `progress(total so far)` after each; background hooks
    are left running until `cleanup`. `input_only`: only the input parser's hooks (no
    browser or other crawl-wide service is started)."""
    out = CrawlStart(crawl)
    cfg = rt.config(config_of(crawl))
    crawl_dir = rt.data_dir / crawl["output_dir"]
    crawl_dir.mkdir(parents=True, exist_ok=True)
    write_crawl_json(crawl_dir, crawl)
    args = _seed_args(rt, crawl)
    env = rt.hook_env(cfg, crawl_dir=crawl_dir)
    runs: list[tuple[HookRun, Any]] = []  # (run, outcome): their `process` rows
    plugins = sorted(INPUT_PLUGINS) if input_only else crawl_hook_plugins(rt, crawl)
    imports: threading.Thread | None = None
    for hook in rt.hooks("Crawl", cfg, plugins):
        if imports is None and not hook.is_background:
            imports = import_crawl_modules()  # while this hook runs (see CRAWL_MODULES)
        # Resuming after a crash: a run of this hook that the dead process started (a
        # crawl-wide service runs until stopped) is stopped before the new one starts.
        last = HookPaths(crawl_dir / hook.plugin, hook.name)
        if last.pid_file.exists() and process_is_alive(last.pid_file):
            kill_process(last.pid_file, signal.SIGTERM, grace=2.0)
        elif last.cmd_file.exists() and not last.exit_file.exists():
            kill_unrecorded(last)  # started, but its pid file was never written
        try:
            hook_run = run_hook(hook, args=args, output_dir=crawl_dir, env=env,
                                timeout=_input_timeout(hook, cfg, args),
                                extra_context={"crawl_id": crawl["id"]})
        except HookLaunchError as e:
            out.failures.append(f"{hook.name}: {e}")
            continue
        if hook.is_background:
            out.background.append(hook_run)
            continue
        outcome = update_from_output(hook_run, output_dir=crawl_dir, snapshot_dir=crawl_dir)
        runs.append((hook_run, outcome))
        if outcome.status == "failed":
            # A seed parser that failed printed nothing usable: archive nothing half-way.
            out.failures.append(f"{hook.plugin}: {outcome.error or 'failed'}")
            continue
        out.invalid += outcome.invalid_records
        if not outcome.other_records and not outcome.record_errors:
            continue  # nothing to load (a set-up hook): the next hook starts at once
        if imports is not None:
            imports.join()
        from archiveflow.store import results as result_store
        from archiveflow.store import snapshots as snapshot_store
        from archiveflow.tasks.ingest import ingest_batches

        name = hook.name
        if outcome.record_errors:
            with rt.store.transaction() as cur:
                result_store.add_record_errors(cur, [
                    {"owner_id": crawl["id"], "hook_name": name, "line": e.line,
                     "error": e.error} for e in outcome.record_errors])

        def store_refused(cur: Any, rep: IngestReport, name: str = name) -> None:
            if rep.refused:  # queryable: record_error rows owned by the crawl
                result_store.add_record_errors(cur, _refusal_rows(crawl["id"], name, rep))

        bound = (snapshot_store.bounded_memory(rt.store.cursor(), IMPORT_MEMORY_MB)
                 if len(outcome.other_records) > BATCH else contextlib.nullcontext())
        with bound:
            rep = ingest_batches(rt.store, outcome.other_records, crawl_context(rt, crawl),
                                 batch=BATCH, on_batch=store_refused, progress=progress)
        out.created += rep.counts.get("Snapshot", 0)
        out.refused.extend(rep.refused)
        out.refused_count += rep.refused_count
    if imports is not None:
        imports.join()
    if runs:
        from archiveflow.store.processes import add_processes
        from archiveflow.tasks.recorder import process_row

        with rt.store.transaction() as cur:
            add_processes(cur, [process_row("crawl", crawl["id"], r, o) for r, o in runs])
    return out


def has_running_background_hooks(start: CrawlStart) -> bool:
    """True while a background on_Crawl hook of this run is alive (by its pid file)."""
    return any(process_is_alive(r.paths.pid_file) for r in start.background)


def is_finished(rt: Runtime, crawl: dict[str, Any]) -> bool:
    """True when no Snapshot of the crawl is queued or started."""
    from archiveflow.store import snapshots as snapshot_store

    return snapshot_store.is_crawl_done(rt.store.cursor(), crawl["id"])


def result_counts(rt: Runtime, crawl: dict[str, Any]) -> dict[str, int]:
    """The crawl's ArchiveResults by status."""
    from archiveflow.store import results as result_store

    return result_store.result_counts(rt.store.cursor(), crawl["id"])


def cleanup(rt: Runtime, start: CrawlStart) -> None:
    """Stop the crawl's background hooks, then run its on_CrawlEnd hooks."""
    crawl = start.crawl
    for hook_run in start.background:
        finalize_background(hook_run)
    cfg = rt.config(config_of(crawl))
    crawl_dir = rt.data_dir / crawl["output_dir"]
    env = rt.hook_env(cfg, crawl_dir=crawl_dir)
    for hook in rt.hooks("CrawlEnd", cfg):
        try:
            run_hook(hook, args={"crawl_id": crawl["id"]}, output_dir=crawl_dir, env=env,
                     timeout=hook_timeout(hook, cfg), extra_context={"crawl_id": crawl["id"]})
        except HookLaunchError:
            continue


def seal(rt: Runtime, crawl: dict[str, Any]) -> dict[str, Any]:
    """started → sealed (after `cleanup`); crawl.json says so too."""
    sealed = crawl_store.seal_crawl(rt.store.cursor(), crawl["id"])
    crawl_dir = rt.data_dir / crawl["output_dir"]
    if (crawl_dir / "crawl.json").exists():
        # The index is sealed; the folder's copy follows when it can (a full disk must not
        # turn a finished crawl into a crash; reindex decides a crawl's status anyway).
        with contextlib.suppress(OSError):
            write_crawl_json(crawl_dir, {**crawl, **sealed})
    return sealed


def write_crawl_json(crawl_dir: Path, crawl: dict[str, Any]) -> None:
    """`crawl.json`: the Crawl's row, so the index can be rebuilt from the folder."""
    tmp = crawl_dir / ".crawl.json.tmp"
    tmp.write_text(json.dumps({k: iso(v) for k, v in crawl.items()}, default=str),
                   encoding="utf-8")
    tmp.replace(crawl_dir / "crawl.json")
