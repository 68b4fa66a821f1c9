"""Nothing lost at scale (issue 14): a 200,000-line URL file imported with
`add --index-only` (the installed command) gives exactly one Snapshot per valid line and a
count of the refused lines with their reasons; `resume` archives an index-only crawl later
and leaves it searchable.

The importing process's peak RSS (with the seed parser's: wait4 reports the larger) is
printed, not asserted: bench/import.py bounds it at 200k and 2M lines."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from archiveflow.store import search
from tests.command import ARCHIVEFLOW
from tests.flows.conftest import run_cli

LINES = 200_000
# Each is refused for its own reason, and each appears BAD_ROUNDS times in the file.
BAD = ["not a url", "ftp://example.com/file.txt", "http://127.0.0.1/private", "http://"]
BAD_ROUNDS = 3
PHRASE = "the quick zebra of archiveflow"  # only tests/fixtures/site/page2.html has it


def _rows(data: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _run_measured(data: Path, *args: str) -> tuple[int, str, str, int]:
    """Run the installed command; returns (exit code, stdout, stderr, peak RSS in MB of it
    and of the children it waited for, from wait4)."""
    out_file, err_file = data.with_name("out.txt"), data.with_name("err.txt")
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen([ARCHIVEFLOW, "--data-dir", str(data), *args], stdout=out,
                                stderr=err, env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60"})
        _pid, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): wait4 has the rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, out_file.read_text(), err_file.read_text(),
            usage.ru_maxrss // 1024)


@pytest.mark.timeout(900)
def test_200k_lines_index_only_make_exactly_one_snapshot_each(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    rounds = {0, LINES // 2, LINES - 1}  # at the start, in the middle, before the end
    assert len(rounds) == BAD_ROUNDS
    with urls.open("w") as f:
        for i in range(LINES):
            if i in rounds:
                f.write("\n".join(BAD) + "\n")
            f.write(f"https://site{i % 997}.example.com/item/{i}?page={i % 13}\n")
        f.write("https://site0.example.com/item/0?page=0\n")  # a repeat: no second snapshot
    data = tmp_path / "data"
    code, out, err, peak = _run_measured(data, "add", "--index-only", str(urls))
    print(f"add --index-only of {LINES:,} lines: exit {code}, peak RSS {peak} MB")
    assert code == 3, err[-3000:]  # imported, some lines refused
    bad_lines = len(BAD) * BAD_ROUNDS
    assert f"{LINES} snapshots queued, {bad_lines} refused" in out, out + err[-2000:]
    assert re.search(r"imported [\d,]+ URLs \(\d+ refused\) …", err), err[-2000:]
    for line in BAD:
        assert f"refused {line!r}: " in err, err[-3000:]
    assert _rows(data, "SELECT count(*), count(DISTINCT url) FROM snapshot") == [(LINES, LINES)]
    assert _rows(data, "SELECT status, count(*) FROM crawl GROUP BY ALL") == [("queued", 1)]
    assert _rows(data, "SELECT count(*) FROM archiveresult") == [(0,)]  # nothing archived
    (crawl_id,) = _rows(data, "SELECT id FROM crawl")[0]
    # Queryable: every refused input with its reason, against the crawl.
    refused = dict(_rows(data, "SELECT line, any_value(error) FROM record_error "
                               "WHERE owner_id = ? GROUP BY line", [crawl_id]))
    assert set(refused) >= set(BAD), refused
    assert "127.0.0.1" in refused["http://127.0.0.1/private"]


def test_index_only_then_resume_archives_and_leaves_it_searchable(
        tmp_path: Path, site_url: str, prefect_api: str) -> None:
    data = tmp_path / "data"
    pages = [f"{site_url}/page1.html", f"{site_url}/page2.html"]
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(pages) + "\n")
    proc = run_cli(data, "add", "--index-only", "--allow-private", "--plugins",
                   "wget,htmltotext", str(urls))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "archiveflow resume" in proc.stderr
    assert _rows(data, "SELECT count(*) FROM archiveresult") == [(0,)]
    assert not list(data.glob("users/*/snapshots/*/*/*/wget"))  # no snapshot hook ran
    proc = run_cli(data, "resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(data, "SELECT url, status FROM snapshot ORDER BY url") == [
        (u, "sealed") for u in pages]
    assert _rows(data, "SELECT status FROM crawl") == [("sealed",)]
    hits = search.run_search(data / "index.duckdb", search.SearchQuery(f'"{PHRASE}"'))
    assert [h["url"] for h in hits] == [f"{site_url}/page2.html"]
