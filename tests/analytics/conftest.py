"""One archive with known outcomes, shared by every analytics test module.

Two real crawls of the local test site through the real CLI:

1. depth 2 from /index.html (6 snapshots) with plugins wget, title, htmltotext,
   parse_html_urls and two fixture plugins from tests/analytics/plugins: `alwaysfail`
   (exit 3 on every snapshot, the message naming the snapshot id) and `sleepy` (always
   outlives SLEEPY_TIMEOUT=1). wget fails on /missing (HTTP 404).
2. depth 0 of /index.html again, without sleepy: a second capture of one URL. While it runs,
   `stats` and `search` are run against the index, which that crawl holds.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.command import ARCHIVEFLOW
from tests.flows.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PLUGINS = Path(__file__).resolve().parent / "plugins"
PLUGINS_1 = "wget,title,htmltotext,parse_html_urls,alwaysfail,sleepy"
PLUGINS_2 = "wget,title,htmltotext,alwaysfail"


@pytest.fixture(scope="package")
def analytics_api(prefect_api: str) -> str:
    """The session's Prefect API (tests/conftest.py), for the CLI processes of this package."""
    return prefect_api


def _cli_in_process(data: Path, *args: str) -> tuple[int, str, str]:
    from archiveflow.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--data-dir", str(data), *args])
    return code, out.getvalue(), err.getvalue()


def _query_while_running(data: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Run stats and search while the crawl process holds the index."""
    from archiveflow.store.reader import Reader

    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with Reader(data / "index.duckdb") as r:
                held = r.via_writer
        except Exception:  # noqa: BLE001 - the index may be between owners
            held = False
        if held:
            stats = _cli_in_process(data, "stats")
            # The writer opens the index a moment before it starts serving queries.
            if stats[0] == 0 or "serves no queries" not in stats[2]:
                seen["stats"] = stats
                seen["search"] = _cli_in_process(data, "search", "quick zebra", "--json")
                seen["running_after"] = proc.poll() is None
                break
        time.sleep(0.2)
    return seen


@pytest.fixture(scope="package")
def archive(tmp_path_factory: pytest.TempPathFactory, site_url: str, analytics_api: str
            ) -> dict[str, Any]:
    """The data folder after both crawls, with what happened on the way."""
    data = tmp_path_factory.mktemp("analytics") / "data"
    common = ["--allow-private", "--config", f"PLUGINS_PATH={FIXTURE_PLUGINS}",
              "--config", "SLEEPY_TIMEOUT=1"]
    first = run_cli(data, "add", "--depth", "2", "--tag", "analytics", "--plugins", PLUGINS_1,
                    *common, f"{site_url}/index.html")
    assert first.returncode == 0, first.stderr[-3000:]
    # Build the text index once while the index is free, so that search during the next
    # crawl goes through the running writer.
    code, out, err = _cli_in_process(data, "search", "zebra")
    assert code == 0, err
    proc = subprocess.Popen(
        [ARCHIVEFLOW, "--data-dir", str(data), "add", "--depth", "0",
         "--tag", "second", "--plugins", PLUGINS_2, *common, f"{site_url}/index.html"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60"})
    during = _query_while_running(data, proc)
    out2, err2 = proc.communicate(timeout=300)
    assert proc.returncode == 0, err2[-3000:]
    return {"data": data, "site": site_url, "during": during}
