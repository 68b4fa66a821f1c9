"""The crawl flow run's final state agrees with what was archived: Failed when every
ArchiveResult failed (the CLI then exits 1), Completed when anything was archived."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb

from tests.flows.conftest import run_cli

FIXTURE_PLUGINS = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


def _crawl_run(data: Path) -> tuple[str, Any]:
    from prefect.client.orchestration import get_client

    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT id, status FROM crawl").fetchone()
    finally:
        con.close()
    assert row is not None and row[1] == "sealed"

    async def fetch() -> Any:
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

            # by name: the session's API holds more runs than one unfiltered page
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"crawl {row[0]}"])))
            return next(r for r in runs if r.name == f"crawl {row[0]}")

    return row[0], asyncio.run(fetch())


def test_crawl_run_fails_when_every_archiveresult_failed(
        tmp_path: Path, site_url: str, prefect_api: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--plugins", "exit3",
                   "--config", f"PLUGINS_PATH={FIXTURE_PLUGINS}",
                   f"{site_url}/page1.html", f"{site_url}/page2.html")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    crawl_id, run = _crawl_run(tmp_path)
    assert run.state.is_failed(), run.state
    assert run.state.message == (f"crawl {crawl_id} archived nothing: all 2 ArchiveResults "
                                 "failed")


def test_crawl_run_completes_when_something_was_archived(
        tmp_path: Path, site_url: str, prefect_api: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--plugins", "exit3,ok_files",
                   "--config", f"PLUGINS_PATH={FIXTURE_PLUGINS}", f"{site_url}/page1.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, run = _crawl_run(tmp_path)
    assert run.state.is_completed(), run.state
