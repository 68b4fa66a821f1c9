"""The one walk over a Snapshot's hooks (tasks/snapshots.run), with real hook processes, a
real DuckDB file and the Recorder thread: the verbs the crawl flow calls, in order.

Both Prefect granularities go through this walk; they differ only in the per-hook callback,
so the concurrency slot (`hold`) is checked here around every hook and around the callback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from archiveflow.store import crawls as crawl_store
from archiveflow.store import load
from archiveflow.tasks import crawls, results, snapshots
from archiveflow.tasks.feed import SnapshotFeed
from archiveflow.tasks.plan import PlanItem, ResultDone, SnapshotPlan, count_results
from archiveflow.tasks.recorder import Recorder
from archiveflow.tasks.runtime import Runtime, open_runtime

FIXTURE_PLUGINS = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
PLUGINS = "noop,ok_files,exit10,daemon"  # three foreground hooks, one background service


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path / "data")
    yield runtime
    runtime.close()


def _crawl_with(rt: Runtime, urls: list[str]) -> dict[str, object]:
    cur = rt.store.cursor()
    crawl = crawl_store.create_crawl(cur, seeds="\n".join(urls), plugins=PLUGINS,
                                     config={"PLUGINS_PATH": str(FIXTURE_PLUGINS)})
    load.insert_snapshots(cur, load.frame("snapshot", [{"url": u, "depth": 0} for u in urls]),
                          crawl_id=crawl["id"], username="default")
    return crawls.claim(rt, crawl["id"])


def test_walk_holds_each_plugin_slot_and_calls_back_for_foreground_hooks(rt: Runtime) -> None:
    crawl = _crawl_with(rt, ["https://example.com/a"])
    events: list[str] = []

    @contextlib.contextmanager
    def hold(plugin: str, config: Mapping[str, str]) -> Iterator[None]:
        events.append(f"enter {plugin}")
        yield
        events.append(f"exit {plugin}")

    def callback(plan: SnapshotPlan, item: PlanItem) -> ResultDone:
        events.append(f"run {item.hook.plugin}")
        return results.run(plan, item)

    recorder = Recorder(rt.store)
    try:
        (plan,) = snapshots.prepare(rt, crawl, snapshots.claim(rt, crawl, 10))
        assert [i.hook.plugin for i in plan.items] == ["noop", "ok_files", "exit10", "daemon"]
        done = snapshots.run(rt, recorder, plan, hold=hold, run_foreground=callback)
    finally:
        recorder.close()
    # foreground hooks in order, each run inside its slot; the background service holds its
    # slot from its start until the snapshot's cleanup stopped it
    assert events == ["enter noop", "run noop", "exit noop",
                      "enter ok_files", "run ok_files", "exit ok_files",
                      "enter exit10", "run exit10", "exit exit10",
                      "enter daemon", "exit daemon"]
    by = {r.hook.plugin: r.outcome.status for r in done}
    # cleanup gave the service time to print its readiness line, then stopped it: it wrote
    # its result on SIGTERM (one that never printed anything would be failed, not noresults)
    assert by.pop("daemon") == "succeeded"
    assert by == {"noop": "noresults", "ok_files": "succeeded", "exit10": "skipped"}
    assert snapshots.is_finished(plan, done)
    assert not snapshots.has_running_background_hooks(plan)
    assert crawls.is_finished(rt, crawl)  # the Recorder sealed the only snapshot


def test_feed_and_walk_archive_a_crawl_then_seal_it(rt: Runtime) -> None:
    urls = [f"https://example.com/{i}" for i in range(5)]
    start = crawls.CrawlStart(_crawl_with(rt, urls))
    recorder = Recorder(rt.store)
    try:
        feed = SnapshotFeed(rt, recorder, start.crawl, concurrency=2, batch=3)
        counts: dict[str, int] = {}
        while not feed.done():
            for plan in feed.take(2, idle=True):
                assert not crawls.is_finished(rt, start.crawl)
                done = snapshots.run(rt, recorder, plan, wait=False)
                assert snapshots.is_finished(plan, done)
                for k, v in count_results([r for r in done if r.hook.plugin != "daemon"]
                                          ).items():
                    counts[k] = counts.get(k, 0) + v
        crawls.cleanup(rt, start)
        sealed = crawls.seal(rt, start.crawl)
    finally:
        recorder.close()
    assert feed.started == len(urls)
    assert counts == {"noresults": 5, "succeeded": 5, "skipped": 5}
    assert sealed["status"] == "sealed"


def test_crawl_background_service_runs_until_cleanup(rt: Runtime) -> None:
    """A crawl-wide on_Crawl service (tests/reliability/plugins/crawlsvc) is running after
    `crawls.run` and stopped by `crawls.cleanup`; the seed parser made the depth-0 Snapshot."""
    services = Path(__file__).resolve().parents[1] / "reliability" / "plugins"
    cur = rt.store.cursor()
    # on_Crawl hooks of every enabled plugin run (the allow-list is for Snapshot hooks):
    # the built-in browser service is switched off here
    row = crawl_store.create_crawl(cur, seeds="https://example.com/a", plugins="crawlsvc",
                                   config={"PLUGINS_PATH": str(services),
                                           "CHROME_ENABLED": "false"})
    start = crawls.run(rt, crawls.claim(rt, row["id"]))
    try:
        assert [r.hook.plugin for r in start.background] == ["crawlsvc"]
        assert crawls.has_running_background_hooks(start)
        assert start.created == 1 and not start.failures
        assert not crawls.is_finished(rt, start.crawl)  # its Snapshot is queued
    finally:
        crawls.cleanup(rt, start)
    assert not crawls.has_running_background_hooks(start)


BG_WRITER = """#!/usr/bin/env python3
# Test hook: a finite background hook that writes its file after a moment.
import json, time
time.sleep(1.0)
open("page.html", "w").write("<p>hi</p>")
print(json.dumps({"type": "ArchiveResult", "status": "succeeded", "output_str": "bgw/page.html"}))
"""
READER = """#!/usr/bin/env python3
# Test hook: reads the background hook's file (it declares wait_for_background_cleanup).
import json, os
ok = os.path.exists(os.path.join(os.environ["SNAP_DIR"], "bgw", "page.html"))
print(json.dumps({"type": "ArchiveResult", "status": "succeeded" if ok else "failed",
                  "output_str": "read" if ok else "no page yet"}))
"""
SILENT = """#!/usr/bin/env python3
# Test hook: a service that never prints anything (never reports being ready).
import time
time.sleep(300)
"""


def test_wait_for_background_cleanup_and_a_daemon_that_never_got_ready(
        rt: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "abxlike"
    for plugin, name, text, cfg in (
            ("bgw", "on_Snapshot__10_bgw.finite.bg.py", BG_WRITER, {}),
            ("silent", "on_Snapshot__05_silent.daemon.bg.py", SILENT, {}),
            ("reader", "on_Snapshot__20_reader.py", READER,
             {"wait_for_background_cleanup": True})):
        (root / plugin).mkdir(parents=True)
        (root / plugin / name).write_text(text)
        (root / plugin / name).chmod(0o755)
        (root / plugin / "config.json").write_text(json.dumps(cfg))
    cur = rt.store.cursor()
    crawl = crawl_store.create_crawl(cur, seeds="https://example.com/a",
                                     plugins="bgw,silent,reader",
                                     config={"PLUGINS_PATH": str(root)})
    load.insert_snapshots(cur, load.frame("snapshot", [{"url": "https://example.com/a",
                                                        "depth": 0}]),
                          crawl_id=crawl["id"], username="default")
    crawl = crawls.claim(rt, crawl["id"])
    recorder = Recorder(rt.store)
    try:
        (plan,) = snapshots.prepare(rt, crawl, snapshots.claim(rt, crawl, 10))
        done = snapshots.run(rt, recorder, plan)
    finally:
        recorder.close()
    by = {r.hook.plugin: r.outcome for r in done}
    # the reader started only once the background writer had finished: it found the page
    assert (by["reader"].status, by["reader"].output_str) == ("succeeded", "read")
    assert by["bgw"].status == "succeeded"
    # stopped at cleanup without ever printing a line: failed, not noresults
    assert by["silent"].status == "failed"
    assert "never reported being ready" in (by["silent"].error or "")


def test_a_snapshot_claimed_twice_runs_once_and_the_crawl_still_ends(rt: Runtime) -> None:
    """A claim that hands out a snapshot the crawl already has (a claim bug did: it returned
    rows it had not moved, which a later claim moved and returned again) is dropped and
    counted: the first run is not disturbed, no hook runs twice, and the crawl seals."""
    urls = [f"https://example.com/{i}" for i in range(4)]
    start = crawls.CrawlStart(_crawl_with(rt, urls))
    cur = rt.store.cursor()

    def unclaim(snapshot_id: str) -> None:  # what the bug left: a handed-out row still queued
        cur.execute("UPDATE snapshot SET status = 'queued', retry_at = now() WHERE id = ?",
                    [snapshot_id])

    recorder = Recorder(rt.store)
    try:
        feed = SnapshotFeed(rt, recorder, start.crawl, concurrency=4, batch=4)
        first, second = feed.take(2, idle=True)  # claims all four
        others = feed.take(2, idle=True)
        unclaim(first.snapshot["id"])
        unclaim(second.snapshot["id"])
        # `second` runs and is written first (its seal finds the row queued: moves nothing);
        # `first` is claimed again before its run even starts.
        snapshots.run(rt, recorder, second, wait=True)
        assert feed.take(4, idle=False) == []  # both claimed again, both dropped
        assert feed.duplicates == 2
        for plan in [first, *others]:
            snapshots.run(rt, recorder, plan, wait=False)
        assert feed.done()
        crawls.cleanup(rt, start)
        sealed = crawls.seal(rt, start.crawl)
    finally:
        recorder.close()
    assert feed.started == len(urls)
    assert sealed["status"] == "sealed"
    rows = cur.execute(
        "SELECT s.status, count(a.id), count(DISTINCT a.hook_name) FROM snapshot s "
        "JOIN archiveresult a ON a.snapshot_id = s.id WHERE s.crawl_id = ? GROUP BY s.id, "
        "s.status", [start.crawl["id"]]).fetchall()
    assert len(rows) == len(urls)
    assert {r[0] for r in rows} == {"sealed"}
    assert all(r[1] == r[2] == len(PLUGINS.split(",")) for r in rows)  # one result per hook
    for plan in (first, second):  # each hook of the twice-claimed snapshots ran once
        for item in plan.items:
            paths = results.HookPaths(plan.snap_dir / item.hook.plugin, item.hook.name)
            assert paths.exit_file.exists()
            assert results.attempt_of(paths) == 1


def test_a_recorder_batch_loads_what_its_snapshots_discovered_as_one_at_a_time(
        rt: Runtime) -> None:
    """The Recorder loads the links of a whole batch of snapshots with one insert per crawl:
    each link is still filtered with its own snapshot's context (depth, URL checks), a URL
    two snapshots found is one Snapshot whose parent is the batch's first finder, and each
    snapshot's report names what it created."""
    from archiveflow.store.records import SnapshotRecord, TagRecord
    from archiveflow.tasks.ingest import ingest_snapshots_outcomes
    from archiveflow.tasks.output import HookOutcome, HookRecords

    cur = rt.store.cursor()
    crawl = crawl_store.create_crawl(cur, seeds="https://example.com/a", max_depth=1,
                                     plugins=PLUGINS, tags="batch")
    load.insert_snapshots(cur, load.frame("snapshot", [
        {"url": "https://example.com/a", "depth": 0},
        {"url": "https://example.com/b", "depth": 0},
        {"url": "https://example.com/deep", "depth": 1}]),
        crawl_id=crawl["id"], username="default")
    parents = {r[1]: {"id": r[0], "depth": r[2]} for r in cur.execute(
        "SELECT id, url, depth FROM snapshot WHERE crawl_id = ?", [crawl["id"]]).fetchall()}

    def found(*urls: str, tags: tuple[str, ...] = ()) -> list[HookOutcome]:
        recs: list[Any] = [SnapshotRecord(type="Snapshot", url=u) for u in urls]
        recs += [TagRecord(type="Tag", name=t) for t in tags]
        return [HookOutcome(status="succeeded", other_records=HookRecords(recs))]

    def ctx(url: str) -> Any:
        return crawls.crawl_context(rt, crawl, parents[url])

    batch = [
        (found("https://example.com/x", "https://example.com/both", "http://127.0.0.1/no",
               tags=("kept",)), ctx("https://example.com/a")),
        (found("https://example.com/both", "https://example.com/y"), ctx("https://example.com/b")),
        (found("https://example.com/too-deep"), ctx("https://example.com/deep")),  # depth 2
    ]
    with rt.store.transaction() as tx:
        reports = ingest_snapshots_outcomes(tx, batch)
    assert sorted(u for _, u in reports[0].created) == ["https://example.com/both",
                                                        "https://example.com/x"]
    assert [u for _, u in reports[1].created] == ["https://example.com/y"]
    assert reports[2].created == []
    assert reports[0].refused_count == 1  # the private address, against its own snapshot
    assert reports[0].counts["Tag"] == 1
    rows = dict(cur.execute("SELECT url, parent_id FROM snapshot WHERE crawl_id = ? AND "
                            "depth = 1 AND url <> 'https://example.com/deep'",
                            [crawl["id"]]).fetchall())
    assert rows == {"https://example.com/x": parents["https://example.com/a"]["id"],
                    "https://example.com/both": parents["https://example.com/a"]["id"],
                    "https://example.com/y": parents["https://example.com/b"]["id"]}
    tagged = {r[0] for r in cur.execute(
        "SELECT s.url FROM snapshot_tag t JOIN snapshot s ON s.id = t.snapshot_id "
        "WHERE t.tag = 'batch'").fetchall()}
    assert {"https://example.com/x", "https://example.com/both",
            "https://example.com/y"} <= tagged  # the crawl's tags on each new snapshot
