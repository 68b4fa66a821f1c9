"""`archiveflow add` as a user meets it: exit codes as the README states them, input that is
taken as given or refused aloud, one tag per name (issue 13, points 4 and 7)."""

from __future__ import annotations

import socket
from pathlib import Path

import duckdb

from tests.flows.conftest import run_cli


def _rows(data: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def test_every_result_failed_exits_1(tmp_path: Path, prefect_api: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--plugins", "headers",
                   f"http://127.0.0.1:{_closed_port()}/")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "nothing was archived: every result failed" in proc.stderr
    assert _rows(tmp_path, "SELECT status FROM archiveresult") == [("failed",)]


def test_a_fully_refused_file_exits_2_before_any_crawl(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("not a url\nftp://example.com/x\nhttp://\n")
    proc = run_cli(tmp_path / "data", "add", str(urls), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refused 'not a url': no URL in this line" in proc.stderr
    assert "no valid URL to archive: all 3 line(s) were refused" in proc.stderr
    assert _rows(tmp_path / "data", "SELECT count(*) FROM crawl") == [(0,)]


def test_a_url_with_a_space_is_archived_as_checked(tmp_path: Path, site_url: str,
                                                   prefect_api: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--plugins", "headers",
                   f"{site_url}/page1.html?a=x y")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _rows(tmp_path, "SELECT url, status FROM snapshot") == [
        (f"{site_url}/page1.html?a=x%20y", "sealed")]


def test_a_bad_stdin_line_is_said_and_the_rest_archived(tmp_path: Path, site_url: str,
                                                        prefect_api: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--plugins", "headers",
                   "--tag", "Harbor", "--tag", "harbor", "-",
                   stdin=f"not a url\n{site_url}/page2.html\n")
    assert proc.returncode == 3, proc.stderr[-2000:]  # archived, some input refused
    assert "refused 'not a url': no URL in this line" in proc.stderr
    assert _rows(tmp_path, "SELECT url FROM snapshot") == [(f"{site_url}/page2.html",)]
    assert _rows(tmp_path, "SELECT tag FROM snapshot_tag") == [("Harbor",)]


def test_the_folder_says_what_the_index_says(tmp_path: Path, site_url: str,
                                             prefect_api: str) -> None:
    import json

    proc = run_cli(tmp_path, "add", "--allow-private", "--plugins", "wget,title",
                   f"{site_url}/page1.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (snap_json,) = tmp_path.glob("users/*/snapshots/*/*/*/snapshot.json")
    (crawl_json,) = tmp_path.glob("users/*/crawls/*/*/crawl.json")
    assert json.loads(snap_json.read_text())["title"] == "Page One"
    assert json.loads(crawl_json.read_text())["status"] == "sealed"
    assert _rows(tmp_path, "SELECT title FROM snapshot") == [("Page One",)]
