"""Documented config layering, as a user meets it through the installed command:
plugin defaults < data/config.json < environment variables < `add --config`."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.flows.conftest import run_cli


def _statuses(data: Path) -> dict[str, str]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT url, status FROM snapshot").fetchall())
    finally:
        con.close()


def test_url_allow_private_from_the_environment(tmp_path: Path, site_url: str,
                                                prefect_api: str) -> None:
    env = {"URL_ALLOW_PRIVATE": "true"}
    proc = run_cli(tmp_path, "add", "--plugins", "headers", f"{site_url}/page1.html", env=env)
    assert proc.returncode == 0, proc.stderr
    assert _statuses(tmp_path) == {f"{site_url}/page1.html": "sealed"}


def test_config_flag_beats_the_environment_and_the_environment_beats_config_json(
        tmp_path: Path, site_url: str, prefect_api: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"URL_ALLOW_PRIVATE": True}))
    proc = run_cli(tmp_path, "add", "--plugins", "headers", f"{site_url}/page2.html",
                   env={"URL_ALLOW_PRIVATE": "false"})
    assert proc.returncode != 0 and "URL_ALLOW_PRIVATE" in proc.stderr, proc.stderr
    proc = run_cli(tmp_path, "add", "--plugins", "headers", "--config",
                   "URL_ALLOW_PRIVATE=true", f"{site_url}/page2.html",
                   env={"URL_ALLOW_PRIVATE": "false"})
    assert proc.returncode == 0, proc.stderr
    assert _statuses(tmp_path) == {f"{site_url}/page2.html": "sealed"}
