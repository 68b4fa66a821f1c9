"""A non-ASCII path through the installed `archiveflow` command: `headers` sends it
percent-encoded (it failed with an ascii codec error), wget and the others as before."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb

from tests.command import ARCHIVEFLOW


def test_headers_of_a_non_ascii_path(tmp_path: Path, site_url: str, prefect_api: str) -> None:
    url = f"{site_url}/Köln"
    proc = subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(tmp_path), "add", "--allow-private",
         "--plugins", "headers", url],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60"})
    con = duckdb.connect(str(tmp_path / "index.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT s.url, a.status, a.error FROM archiveresult a "
                           "JOIN snapshot s ON s.id = a.snapshot_id").fetchall()
    finally:
        con.close()
    assert rows == [(url, "succeeded", None)], (rows, proc.stderr[-2000:])
    saved = next((tmp_path / "users").rglob("headers.json")).read_text(encoding="utf-8")
    assert '"status": 404' in saved  # the test site has no such page: its answer is kept
