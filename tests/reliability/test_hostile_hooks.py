"""Hostile hooks inside a real crawl: each one is contained, reported, and cleaned up.

One depth-0 crawl of the local site runs every hostile fixture plugin (tests/reliability/
plugins, added with PLUGINS_PATH); the crawl must complete and every result must be final
with a reason a person can act on, logs kept and capped, nothing outside the data folder
changed, and no process left.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.reliability.conftest import PLUGINS, hook_processes, query, run_cli

HOSTILE = ["hang", "noterm", "daemonize", "flood", "garbage", "badrecords", "selfkill",
           "escape", "clobber"]
LOG_CAP = 10 * 1024 * 1024


def _digest(path: Path) -> tuple[str, int]:
    st = os.lstat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns


@pytest.fixture(scope="module")
def crawl(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
          ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    outside = root / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_bytes(b"precious\n")
    clobber = outside / "clobber_canary.txt"
    clobber.write_bytes(b"precious\n" * (1024 * 1024 + 7))  # > 10 MB: a log cap would cut it
    before = {p.name: _digest(p) for p in outside.iterdir()}
    t0 = time.monotonic()
    proc = run_cli(
        data, "add", "--allow-private", "--plugins", ",".join(HOSTILE),
        "--config", f"PLUGINS_PATH={PLUGINS}", "--config", "HANG_TIMEOUT=3",
        "--config", "NOTERM_TIMEOUT=3", f"{site_url}/index.html",
        env={"RELIABILITY_CANARY": str(canary), "CLOBBER_RELIABILITY_CANARY": str(clobber)})
    took = time.monotonic() - t0
    rows = query(data, """
        SELECT a.plugin, a.status, a.error, a.output_str, a.exit_code, a.id, s.output_dir
        FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id""")
    return {
        "proc": proc, "data": data, "outside": outside, "canary": canary, "before": before,
        "took": took, "left": hook_processes(data),
        "results": {r[0]: {"status": r[1], "error": r[2] or "", "output_str": r[3],
                           "exit_code": r[4], "id": r[5], "dir": data / r[6] / r[0]}
                    for r in rows},
        "crawls": query(data, "SELECT status FROM crawl"),
        "snapshots": query(data, "SELECT status FROM snapshot"),
    }


def test_crawl_completes(crawl: dict[str, Any]) -> None:
    proc = crawl["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert crawl["crawls"] == [("sealed",)] and crawl["snapshots"] == [("sealed",)]
    assert sorted(crawl["results"]) == sorted(HOSTILE)
    assert crawl["took"] < 150, f"hostile crawl took {crawl['took']:.0f}s"


@pytest.mark.parametrize(("plugin", "status", "reason"), [
    ("hang", "failed", "timed out after 3s"),
    ("noterm", "failed", "timed out after 3s"),
    ("flood", "failed", "output too large"),
    ("selfkill", "failed", "killed by signal SIGSEGV"),
])
def test_result_fails_with_a_reason(crawl: dict[str, Any], plugin: str, status: str,
                                    reason: str) -> None:
    r = crawl["results"][plugin]
    assert r["status"] == status and reason in r["error"], r


def test_no_process_left(crawl: dict[str, Any]) -> None:
    assert crawl["left"] == []
    gc = crawl["results"]["daemonize"]["dir"] / "grandchild.pid"
    pid = int(gc.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_daemonizing_hook_result_stands(crawl: dict[str, Any]) -> None:
    # It exited 0 and left a file: its result stands; its grandchild was killed.
    assert crawl["results"]["daemonize"]["status"] == "succeeded"


def test_flood_logs_are_kept_and_capped(crawl: dict[str, Any]) -> None:
    d = crawl["results"]["flood"]["dir"]
    log = d / "on_Snapshot__13_flood.stdout.log"
    assert log.is_file() and 0 < log.stat().st_size <= LOG_CAP + 4096
    assert b"log truncated" in log.read_bytes()
    assert (d / "on_Snapshot__13_flood.exit.json").is_file()


def test_garbage_output_keeps_valid_records(crawl: dict[str, Any]) -> None:
    r = crawl["results"]["garbage"]
    assert r["status"] == "succeeded" and r["output_str"] == "garbage/x", r
    tags = {t for (t,) in query(crawl["data"], "SELECT tag FROM snapshot_tag")}
    assert "garbage-ok" in tags
    log = r["dir"] / "on_Snapshot__14_garbage.stdout.log"
    assert b"\xff\xfe\xfa" in log.read_bytes()  # the log keeps the bytes as printed


def test_bad_records_are_logged_not_fatal(crawl: dict[str, Any]) -> None:
    r = crawl["results"]["badrecords"]
    assert r["status"] == "noresults" and r["output_str"] == "nothing to save", r
    errors = query(crawl["data"], "SELECT line, error FROM record_error WHERE owner_id = ?",
                   [r["id"]])
    lines = " ".join(line for line, _ in errors)
    for needle in ("Bogus", "no_type", "deep", "excellent", "not a dict"):
        assert needle in lines, (needle, errors)
    assert all(err for _, err in errors)


def test_escape_attempts_are_refused(crawl: dict[str, Any]) -> None:
    r = crawl["results"]["escape"]
    d: Path = r["dir"]
    assert "outside the snapshot folder" in r["error"], r
    assert not (d / "canary_link").is_symlink() and not (d / "canary_dir_link").is_symlink()
    assert (d / "inside_link").is_symlink()  # a link inside the snapshot is fine
    assert "canary" not in (r["output_str"] or "") and "passwd" not in (r["output_str"] or "")
    files = [p for (p,) in query(crawl["data"],
                                 "SELECT path FROM output_file WHERE archiveresult_id = ?",
                                 [r["id"]])]
    assert files and all(not p.startswith("..") and "passwd" not in p and "canary" not in p
                         for p in files), files


def test_nothing_outside_the_data_folder_changed(crawl: dict[str, Any]) -> None:
    after = {p.name: _digest(p) for p in crawl["outside"].iterdir()}
    assert after["canary.txt"] == crawl["before"]["canary.txt"]


def test_runner_files_cannot_be_redirected_outside(crawl: dict[str, Any]) -> None:
    after = {p.name: _digest(p) for p in crawl["outside"].iterdir()}
    assert after["clobber_canary.txt"] == crawl["before"]["clobber_canary.txt"]
    r = crawl["results"]["clobber"]
    assert r["status"] in ("noresults", "succeeded") and (
        r["dir"] / "on_Snapshot__18_clobber.exit.json").is_file()
