"""`archiveflow reindex`: rebuild index.duckdb from the archive folder alone (invariant 2).

What the files hold, and what becomes of it:

- `crawl.json` in each crawl folder and the `crawl` object inside every `snapshot.json`:
  Crawl rows (ids, seeds, depth, tags, config, timestamps).
- `snapshot.json` in each snapshot folder: the Snapshot row and its tags.
- every hook run in a snapshot's plugin folders (`<stem>.sh`, logs, `<stem>.exit.json`,
  files): an ArchiveResult rebuilt by `update_from_output`, exactly as the pipeline learned it
  (status, output_str, output_json, error, times, files with sizes and mimetypes) and the
  other records the hook printed (Tags; discovered Snapshots that never started are created
  again, queued). The Snapshot's title is its `title` result, as in the pipeline.
- A run with a command file but no exit record was cut short: its result is `queued` and
  its Snapshot too, so `archiveflow resume` finishes it.

ArchiveResult ids are not in the files today: the id is read from the run's EXTRA_CONTEXT
(`archiveresult_id`) when the pipeline put it there, else derived from (snapshot id, hook
name), which is the result's natural key. Binaries and the `process` log are not rebuilt
(`archiveflow install` resolves binaries again).
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.store import machines
from archiveflow.store import reindex as rstore
from archiveflow.store import search as search_store
from archiveflow.store import snapshots as snapshot_store
from archiveflow.store.records import SnapshotRecord, TagRecord
from archiveflow.tasks.hooks import HookOutcome, HookPaths, update_from_output
from archiveflow.tasks.ingest import Context, process_hook_records
from archiveflow.tasks.machine import this_machine
from archiveflow.tasks.results import attempt_of

INDEX_NAME: Final[str] = "index.duckdb"
# Namespace of ArchiveResult ids derived from (snapshot id, hook name); never change it.
RESULT_NAMESPACE: Final[uuid.UUID] = uuid.UUID("6f0b3c1e-7c1a-4a53-9a4e-a0c1f10e0000")
_EXTRA_CONTEXT = re.compile(r"EXTRA_CONTEXT=('(?:[^']|'\\'')*'|\S+)")
_TRUE: Final[frozenset[str]] = frozenset({"true", "1", "yes", "on"})


@dataclass
class ReindexReport:
    """What a rebuild found and where the old index went."""

    crawls: int = 0
    snapshots: int = 0
    results: int = 0
    files: int = 0
    queued_snapshots: int = 0
    rediscovered: int = 0
    old_index: Path | None = None
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the user."""
        lines = [f"rebuilt the index: {self.crawls} crawls, {self.snapshots} snapshots, "
                 f"{self.results} results, {self.files} files"]
        if self.queued_snapshots or self.rediscovered:
            lines.append(f"{self.queued_snapshots} snapshots unfinished and "
                         f"{self.rediscovered} discovered but never started are queued: "
                         "run `archiveflow resume`")
        if self.old_index:
            lines.append(f"the previous index is kept as {self.old_index}")
        for u in self.unreadable[:10]:
            lines.append(f"skipped unreadable {u}")
        return "\n".join(lines)


def _ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            return None
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return None


def _read_json(path: Path, report: ReindexReport) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report.unreadable.append(str(path))
        return None
    return data if isinstance(data, dict) else None


def result_id(snapshot_id: str, hook_name: str, sh_file: Path) -> str:
    """The ArchiveResult id: from the run's EXTRA_CONTEXT if recorded there, else derived
    from its natural key (snapshot id, hook name)."""
    try:
        m = _EXTRA_CONTEXT.search(sh_file.read_text(encoding="utf-8", errors="replace"))
        if m:
            ctx = json.loads(shlex.split(m.group(1))[0])
            if isinstance(ctx, dict) and ctx.get("archiveresult_id"):
                return str(ctx["archiveresult_id"])
    except (OSError, ValueError, IndexError):
        pass
    return str(uuid.uuid5(RESULT_NAMESPACE, f"{snapshot_id}/{hook_name}"))


_ATTEMPT: Final = re.compile(r"\.attempt\d+$")  # earlier attempts (tasks/results.set_aside)


def hook_runs(folder: Path) -> Iterator[tuple[str, HookPaths]]:
    """(plugin, HookPaths) of every hook run under a crawl or snapshot folder."""
    for plugin_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        stems = {f.name[: -len(".sh")] for f in plugin_dir.glob("on_*.sh")}
        stems |= {f.name[: -len(".exit.json")] for f in plugin_dir.glob("on_*.exit.json")}
        # `<stem>.attemptN.*` are earlier attempts of a retried run, not runs of their own
        for stem in sorted(s for s in stems if not _ATTEMPT.search(s)):
            yield plugin_dir.name, HookPaths(plugin_dir, stem)


def _crawl_row(data: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        **{k: data.get(k) for k in rstore.CRAWL_COLUMNS},
        "status": "sealed",  # decided once its snapshots are known
        "created_at": _ts(data.get("created_at")) or now,
        "modified_at": _ts(data.get("modified_at")) or _ts(data.get("created_at")) or now,
        "username": data.get("username") or "default",
        "seeds": data.get("seeds") or "",
        "max_depth": int(data.get("max_depth") or 0),
        "tags": data.get("tags") or "",
        "config": rstore.json_text(data.get("config")) or "{}",
    }


def _result_row(ar_id: str, snapshot: dict[str, Any], plugin: str, paths: HookPaths,
                outcome: HookOutcome | None) -> dict[str, Any]:
    created = snapshot["created_at"]
    row: dict[str, Any] = {
        "id": ar_id, "snapshot_id": snapshot["id"], "plugin": plugin,
        "hook_name": paths.stem, "output_dir": f"{snapshot['output_dir']}/{plugin}",
        "is_background": ".bg" in paths.stem.split("."), "created_at": created,
        "modified_at": created, "attempts": 0, "status": "queued",
    }
    if outcome is None:
        return row
    return {
        **row, "status": outcome.status,
        "attempts": attempt_of(paths),
        "modified_at": outcome.ended_at or created, "start_ts": outcome.started_at,
        "end_ts": outcome.ended_at, "exit_code": outcome.exit_code,
        "output_str": outcome.output_str,
        "output_json": rstore.json_text(outcome.output_json), "error": outcome.error,
        "output_size": outcome.output_size, "output_count": len(outcome.output_files),
    }


@dataclass
class _Scan:
    crawls: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    # (crawl id, snapshot row or None, records printed) in capture order
    records: list[tuple[str, dict[str, Any] | None, list[Any]]] = field(default_factory=list)


def _scan_snapshot(data_dir: Path, snap_json: Path, scan: _Scan, report: ReindexReport) -> None:
    data = _read_json(snap_json, report)
    if data is None or not data.get("id") or not data.get("url"):
        return
    snap_dir = snap_json.parent
    crawl = data.get("crawl") or {}
    if crawl.get("id") and crawl["id"] not in scan.crawls:
        scan.crawls[crawl["id"]] = _crawl_row(crawl)
    created = _ts(data.get("created_at")) or datetime.now(UTC)
    snap: dict[str, Any] = {
        "id": data["id"], "crawl_id": data.get("crawl_id") or crawl.get("id"),
        "url": data["url"], "status": "sealed", "created_at": created, "modified_at": created,
        "output_dir": data.get("output_dir") or str(snap_dir.relative_to(data_dir)),
        "depth": int(data.get("depth") or 0), "parent_id": data.get("parent_id"),
        "title": data.get("title"), "bookmarked_at": _ts(data.get("bookmarked_at")),
        "config": rstore.json_text(data.get("config")) or "{}",
    }
    scan.tags.extend((snap["id"], str(t)) for t in data.get("tags") or [])
    printed: list[Any] = []
    for plugin, paths in hook_runs(snap_dir):
        ar_id = result_id(snap["id"], paths.stem, paths.cmd_file)
        outcome = None
        if paths.exit_file.exists():
            outcome = update_from_output(paths, output_dir=snap_dir, snapshot_dir=snap_dir)
            printed.extend(outcome.other_records)
            scan.files.extend({"archiveresult_id": ar_id, "path": f.path, "size": f.size,
                               "mimetype": f.mimetype} for f in outcome.output_files)
            if plugin == "title" and outcome.status == "succeeded" and outcome.output_str:
                snap["title"] = outcome.output_str
            if outcome.ended_at and outcome.ended_at > snap["modified_at"]:
                snap["modified_at"] = outcome.ended_at
        else:
            snap["status"] = "queued"  # cut short: resume runs it again
        scan.results.append(_result_row(ar_id, snap, plugin, paths, outcome))
    scan.snapshots.append(snap)
    if printed:
        scan.records.append((snap["crawl_id"], snap, printed))


def scan_archive(data_dir: Path, report: ReindexReport) -> _Scan:
    """Read every crawl and snapshot folder under `data_dir/users`."""
    scan = _Scan()
    users = data_dir / "users"
    for crawl_json in sorted(users.glob("*/crawls/*/*/crawl.json")):
        data = _read_json(crawl_json, report)
        if data and data.get("id"):
            scan.crawls[data["id"]] = _crawl_row(data)
            printed: list[Any] = []
            for _plugin, paths in hook_runs(crawl_json.parent):
                if paths.exit_file.exists():
                    printed.extend(update_from_output(
                        paths, output_dir=crawl_json.parent,
                        snapshot_dir=crawl_json.parent).other_records)
            if printed:
                scan.records.append((data["id"], None, printed))
    for snap_json in sorted(users.glob("*/snapshots/*/*/*/snapshot.json")):
        _scan_snapshot(data_dir, snap_json, scan, report)
    scan.snapshots.sort(key=lambda s: (s["created_at"], s["id"]))
    order = {s["id"]: i for i, s in enumerate(scan.snapshots)}
    scan.records.sort(key=lambda r: -1 if r[1] is None else order[r[1]["id"]])
    return scan


def _context(crawl: dict[str, Any], snapshot: dict[str, Any] | None, machine_id: str
             ) -> Context:
    cfg = json.loads(crawl.get("config") or "{}")
    return Context(
        crawl=crawl, snapshot=snapshot, machine_id=machine_id,
        allow_private=str(cfg.get("URL_ALLOW_PRIVATE", "false")).lower() in _TRUE,
        allow_file=str(cfg.get("URL_ALLOW_FILE", "false")).lower() in _TRUE,
    )


def reindex(data_dir: Path, on_progress: Callable[[str], None] | None = None
            ) -> ReindexReport:
    """Rebuild `<data_dir>/index.duckdb` from the folder; the old index is moved aside.

    Raises IndexLocked when a process holds the index (a crawl is running).
    """
    say = on_progress or (lambda _msg: None)
    index_path = data_dir / INDEX_NAME
    rstore.check_free(index_path)
    report = ReindexReport()
    scan = scan_archive(data_dir, report)
    say(f"read {len(scan.crawls)} crawls, {len(scan.snapshots)} snapshots, "
        f"{len(scan.results)} hook runs from {data_dir}")
    store = rstore.open_new(index_path)
    try:
        machine = this_machine()
        with store.transaction() as cur:
            machines.upsert_machine(cur, machine_id=machine.id, hostname=machine.hostname,
                                    os=machine.os, arch=machine.arch)
            rstore.insert_rows(cur, "crawl", list(scan.crawls.values()))
            rstore.insert_rows(cur, "snapshot", scan.snapshots)
            rstore.insert_rows(cur, "archiveresult", scan.results)
            rstore.insert_rows(cur, "output_file", scan.files)
            snapshot_store.add_tags(cur, scan.tags)
            for crawl_id, snap, records in scan.records:
                crawl = scan.crawls.get(crawl_id)
                wanted = [r for r in records if isinstance(r, SnapshotRecord | TagRecord)]
                if crawl is None or not wanted:
                    continue
                rep = process_hook_records(cur, wanted, _context(crawl, snap, machine.id))
                report.rediscovered += len(rep.created)
            rstore.requeue_unfinished_crawls(cur)
            search_store.rebuild_text(cur, data_dir)
        cur = store.cursor()
        report.crawls = len(scan.crawls)
        report.snapshots = len(scan.snapshots)
        report.results = len(scan.results)
        report.files = len(scan.files)
        report.queued_snapshots = rstore.count_resumable_snapshots(cur)
        rstore.checkpoint(cur)
    finally:
        store.close()
    report.old_index = rstore.swap_in(index_path)
    return report
