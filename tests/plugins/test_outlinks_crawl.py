"""Outlinks come from the page as served, through the installed `archiveflow` command.

wget's copy converts a page's link to itself (`href="/home/"` on /home/) into `index.html`;
read from there, /home/ and /home/index.html were both archived.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb

from tests.command import ARCHIVEFLOW


def test_a_page_linking_to_itself_is_archived_once(tmp_path: Path, site_url: str,
                                                   prefect_api: str) -> None:
    proc = subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(tmp_path), "add", "--allow-private", "--depth", "1",
         "--plugins", "wget,parse_html_urls", f"{site_url}/home/"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    con = duckdb.connect(str(tmp_path / "index.duckdb"), read_only=True)
    try:
        urls = {u for (u,) in con.execute("SELECT url FROM snapshot").fetchall()}
    finally:
        con.close()
    assert urls == {f"{site_url}/home/", f"{site_url}/page1.html"}
