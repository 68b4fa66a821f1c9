"""`archiveflow add --depth 2` against the local test site, end to end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.flows.conftest import hook_processes, run_cli

EXPECTED_PAGES = {  # reachable within depth 2 from index.html
    "/index.html": ("Archiveflow Test Site & Home", 0),
    "/page1.html": ("Page One", 1),
    "/page2.html": ("Page Two", 1),
    "/redirect": ("Page Three (redirect target)", 1),
    "/missing": ("404 Not Found - Test Site", 1),
    "/deep/page4.html": ("Page Four (deep)", 2),
}
FOREGROUND = ["headers", "wget", "title", "favicon", "htmltotext", "parse_html_urls"]


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
            ) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("data")
    proc = run_cli(data, "add", "--depth", "2", "--allow-private", "--tag", "e2e",
                   f"{site_url}/index.html")
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        snaps = con.execute("SELECT id, url, depth, title, status, output_dir, crawl_id "
                            "FROM snapshot").fetchall()
        results = con.execute(
            "SELECT s.url, a.plugin, a.status, a.output_str, a.error, a.output_json, "
            "a.is_background FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id"
        ).fetchall()
        tags = con.execute("SELECT DISTINCT tag FROM snapshot_tag").fetchall()
    finally:
        con.close()
    return {"proc": proc, "data": data, "site": site_url, "snaps": snaps,
            "results": results, "tags": tags}


def _path(url: str, site: str) -> str:
    return url[len(site):]


def test_cli_exits_zero_with_a_summary(crawled: dict[str, Any]) -> None:
    proc = crawled["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plugin" in proc.stdout and "wget" in proc.stdout


def test_exactly_the_pages_within_depth_two(crawled: dict[str, Any]) -> None:
    got = {_path(u, crawled["site"]): (t, d) for _, u, d, t, _, _, _ in crawled["snaps"]}
    assert set(got) == set(EXPECTED_PAGES)
    for page, (title, depth) in EXPECTED_PAGES.items():
        assert got[page] == (title, depth), page
    assert all(s[4] == "sealed" for s in crawled["snaps"])
    assert crawled["tags"] == [("e2e",)]


def test_every_plugin_result_is_final_and_right(crawled: dict[str, Any]) -> None:
    by = {(_path(u, crawled["site"]), p): (st, out, err, oj)
          for u, p, st, out, err, oj, _ in crawled["results"]}
    for page in EXPECTED_PAGES:
        for plugin in [*FOREGROUND, "screenshot"]:
            assert (page, plugin) in by, (page, plugin)
        if page == "/missing":
            continue
        for plugin in FOREGROUND:
            assert by[(page, plugin)][0] == "succeeded", (page, plugin, by[(page, plugin)])
    # The 404 page: headers captured the status; wget kept the error page but failed.
    status, _, _, oj = by[("/missing", "headers")]
    assert status == "succeeded" and json.loads(oj)["status"] == 404
    status, _, err, _ = by[("/missing", "wget")]
    assert status == "failed" and "404" in (err or "")
    # page four's outlinks are depth 3: printed by the hook, not archived
    assert by[("/deep/page4.html", "parse_html_urls")][0] == "succeeded"


def test_files_are_where_the_layout_says(crawled: dict[str, Any]) -> None:
    data: Path = crawled["data"]
    for sid, url, _, _, _, output_dir, _ in crawled["snaps"]:
        parts = output_dir.split("/")
        assert parts[:3] == ["users", "default", "snapshots"] and len(parts[3]) == 8
        assert parts[4] == "127.0.0.1" and parts[5] == sid
        snap = data / output_dir
        assert (snap / "headers" / "headers.json").is_file()
        assert (snap / "htmltotext" / "htmltotext.txt").is_file()
        warcs = list((snap / "wget").glob("**/*.warc.gz"))
        assert warcs and warcs[0].stat().st_size > 0, url


def test_background_hook_result_is_recorded(crawled: dict[str, Any]) -> None:
    shots = [(u, st, out) for u, p, st, out, _, _, bg in crawled["results"]
             if p == "screenshot"]
    assert len(shots) == len(EXPECTED_PAGES)
    for url, status, _out in shots:
        if _path(url, crawled["site"]) == "/missing":
            continue
        assert status == "succeeded", (url, status)
    snap_dirs = [crawled["data"] / s[5] for s in crawled["snaps"]]
    assert any((d / "screenshot" / "screenshot.png").is_file() for d in snap_dirs)


def test_no_hook_process_left(crawled: dict[str, Any]) -> None:
    assert hook_processes(crawled["data"]) == []


def _prefect_runs(crawl_id: str) -> tuple[Any, list[Any], list[Any], list[Any]]:
    """The crawl's flow run, its subflow runs, its own task runs, the subflows' task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    async def fetch() -> tuple[Any, list[Any], list[Any], list[Any]]:
        async with get_client() as client:
            # by name: the session's API holds more runs than one unfiltered page
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"crawl {crawl_id}"])))
            crawl_run = next(r for r in runs if r.name == f"crawl {crawl_id}")
            subs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[crawl_run.id])))
            own = await client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[crawl_run.id])))
            nested = []
            if subs:
                nested = await client.read_task_runs(task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[s.id for s in subs])))
            return crawl_run, subs, own, nested

    return asyncio.run(fetch())


def test_prefect_shows_the_crawl_and_a_run_per_snapshot(crawled: dict[str, Any]) -> None:
    crawl_run, subs, own, _ = _prefect_runs(crawled["snaps"][0][6])
    assert crawl_run.state.is_completed()
    snapshot_runs = [t for t in own if t.task_key.startswith("archive_snapshot")
                     or t.name.startswith(crawled["site"])]
    assert sorted(_path(t.name, crawled["site"]) for t in snapshot_runs) == sorted(
        EXPECTED_PAGES)
    assert all(t.state.is_completed() for t in snapshot_runs)


def test_prefect_shows_each_archiveresult_under_its_snapshot(crawled: dict[str, Any]) -> None:
    """Default granularity: every ArchiveResult is reported as a task run (id = its row id)
    nested under its Snapshot's task run, with the hook's own times and outcome."""
    import time

    con = duckdb.connect(str(crawled["data"] / "index.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT a.id, a.plugin, a.status, a.error, a.start_ts, a.end_ts, s.url "
        "FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id").fetchall()
    con.close()
    deadline = time.monotonic() + 60  # the server records task-run events in batches
    while True:
        _, _, own, _ = _prefect_runs(crawled["snaps"][0][6])
        reported = {str(t.id): t for t in own if "archiveresult" in t.tags}
        if len(reported) >= len(rows) or time.monotonic() > deadline:
            break
        time.sleep(1)
    snapshot_runs = {t.name: t.id for t in own if t.name.startswith(crawled["site"])}
    assert sorted(reported) == sorted(r[0] for r in rows)
    for ar_id, plugin, status, error, start, end, url in rows:
        t = reported[ar_id]
        assert t.name == plugin and plugin in t.tags
        assert [p.id for p in t.task_inputs["__parents__"]] == [snapshot_runs[url]]
        assert abs((t.start_time - start).total_seconds()) < 0.001
        assert abs((t.end_time - end).total_seconds()) < 0.001
        if status == "failed":
            assert t.state.is_failed() and t.state.message == error[:2000]
        else:
            assert t.state.is_completed(), (plugin, url, t.state)
    assert any(t.state.is_failed() and "404" in (t.state.message or "")
               for t in reported.values())  # wget on /missing


def test_task_granularity_nests_snapshot_flows_and_result_tasks(
        tmp_path: Path, site_url: str, prefect_api: str) -> None:
    proc = run_cli(tmp_path, "add", "--depth", "1", "--allow-private", "--plugins",
                   "headers,wget,title,parse_html_urls", f"{site_url}/page1.html",
                   env={"ARCHIVEFLOW_PREFECT_GRANULARITY": "task"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "index.duckdb"), read_only=True)
    crawl_id, n = con.execute("SELECT crawl_id, count(*) FROM snapshot GROUP BY 1").fetchone()
    con.close()
    crawl_run, subs, _, nested = _prefect_runs(crawl_id)
    assert crawl_run.state.is_completed()
    snapshot_flows = [s for s in subs if s.name.startswith(site_url)]
    assert len(snapshot_flows) == n == 3  # page1 → page2, deep/page4
    # the crawl first installed what wget needs, as a subflow of its own
    assert {s.name.split()[0] for s in subs} - {s.name for s in snapshot_flows} == {
        "install-binaries"}
    result_tasks = [t for t in nested if t.flow_run_id in {s.id for s in snapshot_flows}]
    assert sorted({t.name for t in result_tasks}) == [
        "headers", "parse_html_urls", "title", "wget"]
    assert sum(1 for t in result_tasks if t.name == "wget") == n
