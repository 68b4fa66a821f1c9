"""Recurring crawls through the CLI and a real `archiveflow serve`, checked in Prefect and DuckDB.

One data folder, two schedules: a sitemap index re-captured on every run (the default) and
an RSS feed with `--only-new`. `serve` runs in a subprocess against the session's Prefect
API; each schedule is triggered twice; the index must hold one new Crawl per run, two
captures of each sitemap URL, and no new Snapshot on the feed's second run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import pytest

from archiveflow.deployments import crawls as dep
from tests.command import ARCHIVEFLOW
from tests.flows.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
CRON = "0 3 1 1 *"  # 1 January: never fires while the test runs
FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Local feed</title><link>{base}/</link>
<item><title>Second page</title><link>{base}/page2.html</link>
<pubDate>Mon, 15 Jan 2024 09:30:00 +0000</pubDate><category>feed</category></item>
<item><title>Third page</title><link>{base}/page3.html</link>
<pubDate>Tue, 20 Feb 2024 18:00:00 GMT</pubDate></item>
</channel></rss>
"""
pytestmark = pytest.mark.timeout(600)


class Serve:
    """`archiveflow serve` in its own session; stderr collected by a thread."""

    def __init__(self, data: Path) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [ARCHIVEFLOW, "--data-dir", str(data), "serve",
             "--no-binaries", "--poll", "1", "--limit", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "120"}, start_new_session=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.ready_after: float | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("serving "):
                self.ready_after = time.monotonic() - self.t0
                self.ready.set()

    def wait_ready(self, timeout: float) -> float:
        if not self.ready.wait(timeout):
            raise AssertionError("serve not ready:\n" + "".join(self.lines[-40:]))
        assert self.ready_after is not None
        return self.ready_after

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # the Runner's graceful shutdown
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                return self.proc.wait(10)
        return self.proc.returncode


async def _deployment(name: str) -> Any:
    from prefect import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(dep.full_name(name))


async def _run_and_wait(names: list[str], timeout: float) -> list[Any]:
    """Trigger one run of each schedule at once; wait until all are final."""
    from prefect import get_client

    ids: list[UUID] = [await dep.trigger(n) for n in names]
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = [await client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not final: {[(r.name, r.state) for r in runs]}")
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
              ) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("sched") / "data"
    feed = tmp_path_factory.mktemp("feed") / "local_feed.xml"
    feed.write_text(FEED.format(base=site_url), encoding="utf-8")
    out: dict[str, Any] = {"data": data}

    t = time.monotonic()
    add = run_cli(data, "schedule", "add", f"{site_url}/seeds/sitemap_index.xml",
                  "--cron", CRON, "--name", "sitemap", "--plugins", "headers",
                  "--allow-private", "--tag", "weekly")
    out["add_seconds"] = time.monotonic() - t
    out["add"] = add
    out["add_feed"] = run_cli(data, "schedule", "add", str(feed), "--every", "1d",
                              "--only-new", "--name", "feed", "--plugins", "headers",
                              "--allow-private")
    out["dup"] = run_cli(data, "schedule", "add", str(feed), "--every", "1d",
                         "--name", "feed")
    out["list"] = run_cli(data, "schedule", "list", "--json")
    out["before"] = {n: asyncio.run(_deployment(n)) for n in ("sitemap", "feed")}

    serve = Serve(data)
    try:
        out["serve_ready_seconds"] = serve.wait_ready(180)
        out["served"] = {n: asyncio.run(_deployment(n)) for n in ("sitemap", "feed")}
        out["runs"] = [asyncio.run(_run_and_wait(["sitemap", "feed"], 240)),
                       asyncio.run(_run_and_wait(["sitemap", "feed"], 240))]
    finally:
        out["serve_rc"] = serve.stop()
        out["serve_log"] = "".join(serve.lines)
    out["after"] = {n: asyncio.run(_deployment(n)) for n in ("sitemap", "feed")}

    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        out["crawls"] = con.execute(
            "SELECT c.id, c.schedule, c.status, c.label, c.created_at, "
            "list(s.url ORDER BY s.url) FILTER (WHERE s.url IS NOT NULL) "
            "FROM crawl c LEFT JOIN snapshot s ON s.crawl_id = c.id GROUP BY ALL "
            "ORDER BY c.created_at").fetchall()
        out["feed_snaps"] = con.execute(
            "SELECT s.url, s.title, list(t.tag) FILTER (WHERE t.tag IS NOT NULL) "
            "FROM snapshot s JOIN crawl c ON c.id = s.crawl_id "
            "LEFT JOIN snapshot_tag t ON t.snapshot_id = s.id "
            "WHERE c.schedule = 'feed' GROUP BY ALL").fetchall()
        out["sitemap_tags"] = con.execute(
            "SELECT DISTINCT t.tag FROM snapshot_tag t JOIN snapshot s ON s.id = t.snapshot_id "
            "JOIN crawl c ON c.id = s.crawl_id WHERE c.schedule = 'sitemap'").fetchall()
        out["results"] = con.execute(
            "SELECT a.plugin, a.status, count(*) FROM archiveresult a JOIN snapshot s "
            "ON s.id = a.snapshot_id JOIN crawl c ON c.id = s.crawl_id "
            "WHERE c.schedule = 'sitemap' GROUP BY ALL").fetchall()
    finally:
        con.close()
    return out


def test_schedule_add_registers_a_paused_deployment_with_its_schedule(
        scheduled: dict[str, Any]) -> None:
    for key in ("add", "add_feed"):
        assert scheduled[key].returncode == 0, scheduled[key].stderr[-3000:]
    sitemap, feed = scheduled["before"]["sitemap"], scheduled["before"]["feed"]
    assert [s.schedule.cron for s in sitemap.schedules] == [CRON]
    assert [s.schedule.interval for s in feed.schedules] == [timedelta(days=1)]
    assert sitemap.paused and feed.paused  # nobody serves them yet
    assert sitemap.entrypoint == "archiveflow.flows.scheduled.archive"
    params = sitemap.parameters
    assert params["schedule"] == "sitemap" and params["plugins"] == "headers"
    assert params["tags"] == ["weekly"] and params["only_new"] is False
    assert params["data_dir"] == str(scheduled["data"].resolve())
    assert feed.parameters["only_new"] is True
    assert "archiveflow" in sitemap.tags and "schedule:sitemap" in sitemap.tags


def test_schedules_json_and_list(scheduled: dict[str, Any]) -> None:
    saved = json.loads((scheduled["data"] / "schedules.json").read_text())
    assert set(saved) == {"sitemap", "feed"}
    assert saved["sitemap"]["cron"] == CRON and saved["feed"]["every_seconds"] == 86400
    rows = [json.loads(ln) for ln in scheduled["list"].stdout.splitlines()]
    assert {r["name"]: r["schedule"] for r in rows} == {"sitemap": f"cron {CRON}",
                                                         "feed": "every 1d"}
    dup = scheduled["dup"]
    assert dup.returncode == 2 and "schedule feed exists" in dup.stderr


def test_serve_unpauses_and_pauses_again_on_stop(scheduled: dict[str, Any]) -> None:
    assert not scheduled["served"]["sitemap"].paused
    assert not scheduled["served"]["feed"].paused
    assert scheduled["serve_rc"] == 0, scheduled["serve_log"][-3000:]
    assert scheduled["after"]["sitemap"].paused and scheduled["after"]["feed"].paused


def test_every_run_completed(scheduled: dict[str, Any]) -> None:
    for pair in scheduled["runs"]:
        for run in pair:
            assert run.state.is_completed(), (run.name, run.state, scheduled["serve_log"][-3000:])


def test_each_run_is_a_new_crawl_and_two_captures_of_each_url(
        scheduled: dict[str, Any], site_url: str) -> None:
    sitemap = [c for c in scheduled["crawls"] if c[1] == "sitemap"]
    assert len(sitemap) == 2 and all(c[2] == "sealed" for c in sitemap)
    pages = sorted(f"{site_url}{p}" for p in ("/index.html", "/page1.html", "/deep/page4.html"))
    assert [c[5] for c in sitemap] == [pages, pages]  # two snapshots of each, one per crawl
    assert scheduled["sitemap_tags"] == [("weekly",)]
    assert scheduled["results"] == [("headers", "succeeded", 6)]


def test_only_new_archives_nothing_the_second_time(scheduled: dict[str, Any],
                                                   site_url: str) -> None:
    feed = [c for c in scheduled["crawls"] if c[1] == "feed"]
    assert len(feed) == 2 and all(c[2] == "sealed" for c in feed)
    assert feed[0][5] == [f"{site_url}/page2.html", f"{site_url}/page3.html"]
    assert feed[1][5] is None  # a Crawl ran, and found nothing new
    assert feed[1][3].startswith("new items of ")
    got = {u: (t, sorted(tags or [])) for u, t, tags in scheduled["feed_snaps"]}
    assert got == {f"{site_url}/page2.html": ("Second page", ["feed"]),
                   f"{site_url}/page3.html": ("Third page", [])}


def test_timings(scheduled: dict[str, Any]) -> None:
    from prefect import get_client

    async def states(run_id: UUID) -> dict[str, float]:
        async with get_client() as client:
            return {s.type.value: s.timestamp.timestamp()
                    for s in await client.read_flow_run_states(run_id)}

    runs = [r for pair in scheduled["runs"] for r in pair]
    spans = []
    for r in runs:
        st = asyncio.run(states(r.id))
        created = r.created.timestamp()
        spans.append(f"{st.get('PENDING', created) - created:.1f}/"
                     f"{st.get('RUNNING', created) - created:.1f}/"
                     f"{st.get('COMPLETED', created) - created:.1f}")
    print(f"\nschedule add {scheduled['add_seconds']:.1f}s (CLI process); serve ready "
          f"{scheduled['serve_ready_seconds']:.1f}s; runs created → pending (picked up) / "
          f"running (subprocess started) / completed: {', '.join(spans)} s")


def test_remove_deletes_schedule_and_deployment(scheduled: dict[str, Any]) -> None:
    from prefect.exceptions import ObjectNotFound

    data = scheduled["data"]
    proc = run_cli(data, "schedule", "remove", "sitemap")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(json.loads((data / "schedules.json").read_text())) == {"feed"}
    with pytest.raises(ObjectNotFound):
        asyncio.run(_deployment("sitemap"))
    again = run_cli(data, "schedule", "remove", "sitemap")
    assert again.returncode == 1 and "no schedule sitemap" in again.stderr
