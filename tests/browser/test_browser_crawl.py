"""A crawl through the installed `archiveflow` command with the browser plugins: one Chromium
for the whole crawl (plugins/chrome), stopped at crawl cleanup with nothing of it left."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import duckdb

from tests.browser.conftest import procs_using
from tests.command import ARCHIVEFLOW

PLUGINS = "wget,parse_html_urls,title,screenshot,pdf,dom,singlefile"


def test_a_crawl_shares_one_browser_and_leaves_nothing(tmp_path: Path, site_url: str,
                                                      prefect_api: str) -> None:
    proc = subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(tmp_path), "add", "--allow-private", "--depth", "1",
         "--plugins", PLUGINS, f"{site_url}/page1.html"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    con = duckdb.connect(str(tmp_path / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.url, a.plugin, a.status, a.output_str, a.output_json::VARCHAR, "
            "s.output_dir FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id"
        ).fetchall()
        crawl_dir = con.execute("SELECT output_dir FROM crawl").fetchone()[0]
    finally:
        con.close()
    browser_rows = [r for r in rows if r[1] in ("screenshot", "pdf", "dom", "singlefile")]
    assert len({r[0] for r in rows}) >= 2, rows
    assert browser_rows and all(r[2] == "succeeded" for r in browser_rows), browser_rows
    assert all('"browser": "crawl"' in r[4] for r in browser_rows), "all in the crawl's browser"
    titles = {r[0]: r[3] for r in rows if r[1] == "title"}
    assert titles[f"{site_url}/page1.html"] == "Page One"
    for url, _plugin, _status, output, _json, snap_dir in browser_rows:
        assert (tmp_path / snap_dir / output).is_file(), (url, output)

    log = (tmp_path / crawl_dir / "chrome" / "on_Crawl__05_chrome.daemon.bg.stderr.log")
    served = re.search(r"serving chromium \d+ for the crawl from (\S+)", log.read_text())
    assert served, log.read_text()
    folder = Path(served.group(1))
    assert not folder.exists(), "the browser's temp folder (profile, socket) is removed"
    assert procs_using(folder) == [], "a Chromium outlived the crawl"
    assert not (tmp_path / crawl_dir / "chrome" / "browser.json").exists()
