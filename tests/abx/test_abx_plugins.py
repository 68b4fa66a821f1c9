"""ArchiveBox's published plugin suite (abx-plugins, pinned in tasks/abx.py) runs unmodified.

Set up as a user does (`archiveflow plugins install abx`, offline from the wheels `make
abx-wheels` downloaded), then one depth-1 crawl of the local test site with abx's wget,
favicon, htmltotext, parse_html_urls, hashes and search_backend_sqlite, as the installed
command, with HOME pointed at an empty folder that must stay empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.command import ARCHIVEFLOW
from tests.flows.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("ARCHIVEFLOW_ABX_WHEELS") or REPO / ".cache" / "abx-wheels")
SELECTED = ("wget", "favicon", "htmltotext", "parse_html_urls", "hashes",
            "search_backend_sqlite")
# The pages a depth-1 crawl of index.html reaches (its links; /redirect is its own URL).
PAGES = {"/index.html", "/page1.html", "/page2.html", "/redirect", "/missing"}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.fixture(scope="module")
def abx_crawl(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
              ) -> dict[str, Any]:
    if not any(WHEELS.glob("abx_plugins-*.whl")):
        pytest.fail(f"no abx-plugins wheels in {WHEELS}: run `make abx-wheels` (make test "
                    "does it)")
    root = tmp_path_factory.mktemp("abx")
    data, home, prefect_home = root / "data", root / "home", root / "prefect-home"
    home.mkdir()
    install = run_cli(data, "plugins", "install", "abx", "--wheels", str(WHEELS), timeout=900)
    again = run_cli(data, "plugins", "install", "abx", "--wheels", str(WHEELS))
    env = {"HOME": str(home), "PREFECT_HOME": str(prefect_home)}
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        env[var] = str(home / var.lower())  # where a tool that follows XDG would write
    crawl = run_cli(data, "add", "--allow-private", "--depth", "1",
                    "--plugins", ",".join(SELECTED),
                    "--config", "SEARCH_BACKEND_SQLITE_ENABLED=True",
                    f"{site_url}/index.html", env=env, timeout=900)
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "select s.url, s.depth, r.plugin, r.hook_name, r.status, r.output_str, r.error, "
            "r.start_ts, r.end_ts from archiveresult r join snapshot s on s.id = r.snapshot_id"
        ).fetchall()
        binaries = con.execute(
            "select name, status, bin_providers, binprovider, error from machine_binary"
        ).fetchall()
    finally:
        con.close()
    cols = ("url", "depth", "plugin", "hook_name", "status", "output_str", "error", "start",
            "end")
    return {"data": data, "home": home, "site": site_url, "install": install, "again": again,
            "crawl": crawl, "results": [dict(zip(cols, r, strict=True)) for r in rows],
            "binaries": {b[0]: b for b in binaries}}


def test_install_is_one_command_and_cached(abx_crawl: dict[str, Any]) -> None:
    install, again = abx_crawl["install"], abx_crawl["again"]
    assert install.returncode == 0, install.stderr[-2000:]
    assert "installed in" in install.stderr and "added" in install.stderr
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already installed" in again.stderr  # the second run reads installed.json only
    data = abx_crawl["data"]
    plugins = Path(install.stdout.strip())
    assert plugins == data / "lib" / "abx" / "plugins" and (plugins / "wget").is_dir()
    assert str(plugins) in (data / "config.json").read_text()


def test_every_page_archived_by_abx_hooks(abx_crawl: dict[str, Any]) -> None:
    crawl = abx_crawl["crawl"]
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    results = abx_crawl["results"]
    site = abx_crawl["site"]
    by_page: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_page.setdefault(r["url"].removeprefix(site), {})[r["plugin"]] = r
    # depth 0 and every link of it (outlinks followed by parse_html_urls' records)
    assert set(by_page) == PAGES, sorted(by_page)
    for page, plugins in by_page.items():
        assert set(plugins) == set(SELECTED), (page, sorted(plugins))
        # abx's hooks ran, not archiveflow's built-in plugins of the same names
        assert plugins["wget"]["hook_name"] == "on_Snapshot__35_wget.finite.bg"
        if page == "/missing":
            continue
        bad = {p: (r["status"], r["output_str"], r["error"]) for p, r in plugins.items()
               if r["status"] != "succeeded"}
        assert not bad, (page, bad)
    # The 404 page as abx's plugins report it: nothing to save is not a failure.
    missing = by_page["/missing"]
    assert {p: r["status"] for p, r in missing.items()} == {
        "wget": "noresults", "favicon": "succeeded", "htmltotext": "noresults",
        "parse_html_urls": "noresults", "hashes": "succeeded",
        "search_backend_sqlite": "noresults"}
    assert missing["wget"]["output_str"] == "No files downloaded"


def test_wait_for_background_cleanup(abx_crawl: dict[str, Any]) -> None:
    """htmltotext and hashes declare wait_for_background_cleanup: they start only once the
    background wget and favicon of their snapshot have ended."""
    pages: dict[str, dict[str, dict[str, Any]]] = {}
    for r in abx_crawl["results"]:
        pages.setdefault(r["url"], {})[r["plugin"]] = r
    for url, plugins in pages.items():
        for waiter in ("htmltotext", "hashes"):
            for bg in ("wget", "favicon"):
                assert plugins[waiter]["start"] >= plugins[bg]["end"], (url, waiter, bg)


def test_only_selected_setup_hooks_and_abxpkg_binaries(abx_crawl: dict[str, Any]) -> None:
    data = abx_crawl["data"]
    # abx has 14 on_CrawlSetup hooks (chrome, singlefile, ublock, ...): none is selected.
    (crawl_dir,) = data.glob("users/*/crawls/*/*")
    ran = {p.name for p in crawl_dir.iterdir() if p.is_dir()}
    assert ran <= {"seeds", *SELECTED}, ran
    # abx's wget declares {WGET_BINARY} in config.json required_binaries: resolved by abxpkg
    name, status, providers, provider, error = abx_crawl["binaries"]["wget"]
    assert (status, providers, provider) == ("succeeded", "abxpkg", "env"), error


def test_nothing_written_outside_the_data_folder(abx_crawl: dict[str, Any]) -> None:
    home = abx_crawl["home"]
    assert _files(home) == []
    data = abx_crawl["data"]
    # abxpkg's own cache and the search index went into the data folder instead
    assert (data / "lib" / "env").is_dir()
    assert (data / "search.sqlite3").is_file()


def test_abx_python_must_be_3_12(tmp_path: Path) -> None:
    """A wrong ABX_PYTHON is one clear line and a non-zero exit, before any venv is made."""
    if sys.version_info >= (3, 12):
        pytest.skip("archiveflow itself runs on Python >= 3.12 here")
    proc = subprocess.run([ARCHIVEFLOW, "--data-dir", str(tmp_path), "plugins", "install", "abx"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ABX_PYTHON": sys.executable})
    assert proc.returncode == 1
    assert "ABX_PYTHON=" in proc.stderr and "not a working Python >= 3.12" in proc.stderr
    assert not (tmp_path / "lib" / "abx" / "venv").exists()


NEEDS_GIT_CONFIG = {"required_plugins": [], "required_binaries": [
    {"name": "git", "binproviders": "env", "min_version": "999.0.0"}]}
SETUP_HOOK = """#!/usr/bin/env python3
# Test hook: a set-up hook; leaves a marker when it runs.
open("setup.marker", "w").write("ran")
"""
SNAPSHOT_HOOK = """#!/usr/bin/env python3
# Test hook: would archive something.
import json
print(json.dumps({"type": "ArchiveResult", "status": "succeeded", "output_str": "ok"}))
"""


def test_unresolvable_binary_fails_fast_with_its_reason(abx_crawl: dict[str, Any],
                                                        tmp_path: Path) -> None:
    """A version bound abxpkg cannot meet (git >= 999 from env only, no network needed):
    the plugin and a plugin requiring it fail at once with abxpkg's reason; once the failure
    is known, the plugin's set-up hook is not started."""
    root = tmp_path / "plugins"
    for plugin, files, config in (
            ("needs_git", {"on_CrawlSetup__10_needs_git.py": SETUP_HOOK,
                           "on_Snapshot__40_needs_git.py": SNAPSHOT_HOOK}, NEEDS_GIT_CONFIG),
            ("uses_git", {"on_Snapshot__41_uses_git.py": SNAPSHOT_HOOK},
             {"required_plugins": ["needs_git"]})):
        (root / plugin).mkdir(parents=True)
        (root / plugin / "config.json").write_text(json.dumps(config))
        for name, text in files.items():
            (root / plugin / name).write_text(text)
            (root / plugin / name).chmod(0o755)
    data = abx_crawl["data"]
    args = ("add", "--allow-private", "--plugins", "uses_git",
            "--config", f"PLUGINS_PATH={root}", f"{abx_crawl['site']}/page1.html")
    for _ in range(2):
        proc = run_cli(data, *args, timeout=600)
        assert proc.returncode == 1, proc.stderr[-2000:]  # every result failed
    assert "does not satisfy min_version 999.0.0" in proc.stdout + proc.stderr
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        crawl_dir, = con.execute(
            "select output_dir from crawl order by created_at desc limit 1").fetchone()
        rows = dict(con.execute(
            "select r.plugin, r.error from archiveresult r join snapshot s on s.id = "
            "r.snapshot_id join crawl c on c.id = s.crawl_id where c.output_dir = ?",
            [crawl_dir]).fetchall())
        git = con.execute("select status, bin_providers, error from machine_binary "
                          "where name = 'git'").fetchone()
    finally:
        con.close()
    assert git[:2] == ("failed", "abxpkg") and "min_version 999.0.0" in git[2]
    assert "binary git could not be resolved" in rows["needs_git"]
    assert "needs plugin needs_git" in rows["uses_git"]
    assert "min_version 999.0.0" in rows["uses_git"]
    # the second crawl knew: its set-up hook did not start
    assert not (data / crawl_dir / "needs_git").exists()


def test_unknown_suite_and_missing_wheels_are_usage_errors(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "plugins", "install", "nope")
    assert proc.returncode == 2 and "unknown plugin suite 'nope'" in proc.stderr
    proc = run_cli(tmp_path, "plugins", "install", "abx", "--wheels", str(tmp_path / "none"))
    assert proc.returncode == 2 and "no such folder" in proc.stderr
