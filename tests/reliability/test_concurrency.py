"""Concurrency: a second `add` while a crawl runs waits for the index (saying so) and then
runs; `status` and `sql` read through the running writer; the index stays consistent.

The second `add` also carries URLs with raw quotes and SQL fragments: stored verbatim.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import PLUGINS, kill9, query, start_cli

SQL_TAG = "a'); DELETE FROM snapshot; --"


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
         ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("concurrency")
    data, ledger = root / "data", root / "ledger.txt"
    env = {"RELIABILITY_LEDGER": str(ledger)}
    first = start_cli(data, "add", "--depth", "2", "--allow-private", "--plugins",
                      "parse_html_urls,ledger", "--config", f"PLUGINS_PATH={PLUGINS}",
                      "--config", "RELIABILITY_WORK=3", "--concurrency", "2",
                      f"{site_url}/index.html", env=env)
    try:
        deadline = time.monotonic() + 180
        while not (ledger.exists() and ledger.read_text().strip()):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "first crawl never started a hook"
            time.sleep(0.1)
        quoted = [f"{site_url}/page1.html?q=1'OR'1'='1;--", f'{site_url}/page2.html?name="x"',
                  f"{site_url}/page2.html?id=1;DROP%20TABLE%20crawl"]
        second = start_cli(data, "add", "--allow-private", "--plugins", "ledger",
                           "--config", f"PLUGINS_PATH={PLUGINS}", "--tag", SQL_TAG, *quoted,
                           env={**env, "RELIABILITY_WORK": "0"})
        reads = {  # at once, while the first crawl writes
            "status": start_cli(data, "status"),
            "sql": start_cli(data, "sql", "SELECT count(*) AS n FROM archiveresult",
                             "--format", "csv"),
            "refused_write": start_cli(data, "sql", "DELETE FROM snapshot"),
        }
        done = {}
        for name, p in reads.items():
            out, err = p.communicate(timeout=240)
            done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        status, sql, refused_write = done["status"], done["sql"], done["refused_write"]
        still_running = first.poll() is None
        out1, err1 = first.communicate(timeout=300)
        out2, err2 = second.communicate(timeout=300)
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                kill9(p)
    return {"data": data, "first": (first.returncode, err1), "second": (second.returncode, err2),
            "status": status, "sql": sql, "refused_write": refused_write,
            "still_running": still_running, "quoted": quoted, "site": site_url}


def test_second_add_waits_with_a_message_then_runs(both: dict[str, Any]) -> None:
    rc1, err1 = both["first"]
    rc2, err2 = both["second"]
    assert rc1 == 0, err1[-3000:]
    assert rc2 == 0, err2[-3000:]
    assert "in use by process" in err2 and "waiting up to" in err2, err2[:2000]


def test_reads_go_through_the_writer(both: dict[str, Any]) -> None:
    assert both["still_running"], "the first crawl ended before the reads: test proves nothing"
    status, sql = both["status"], both["sql"]
    assert status.returncode == 0 and "snapshot:" in status.stdout, status.stderr[-2000:]
    assert sql.returncode == 0 and sql.stdout.splitlines()[0].strip('"') == "n", sql
    assert int(sql.stdout.splitlines()[1]) >= 0
    bad = both["refused_write"]
    assert bad.returncode != 0 and "--write" in bad.stderr, bad.stderr[-2000:]


def test_index_is_consistent(both: dict[str, Any]) -> None:
    data: Path = both["data"]
    assert query(data, "SELECT status, count(*) FROM crawl GROUP BY 1") == [("sealed", 2)]
    assert query(data, "SELECT count(*) FROM snapshot WHERE status <> 'sealed'") == [(0,)]
    assert query(data, "SELECT count(*) FROM archiveresult WHERE status IN "
                       "('queued', 'started')") == [(0,)]
    dup = query(data, "SELECT crawl_id, url, count(*) FROM snapshot GROUP BY 1, 2 "
                      "HAVING count(*) > 1")
    assert dup == []
    dup = query(data, "SELECT snapshot_id, hook_name FROM archiveresult GROUP BY 1, 2 "
                      "HAVING count(*) > 1")
    assert dup == []
    assert query(data, "SELECT count(*) FROM snapshot s JOIN crawl c ON c.id = s.crawl_id "
                       "WHERE c.max_depth = 2") == [(6,)]


def test_quotes_and_sql_in_urls_and_tags_are_verbatim(both: dict[str, Any]) -> None:
    data: Path = both["data"]
    urls = {u for (u,) in query(data, "SELECT url FROM snapshot")}
    for url in both["quoted"]:
        assert url in urls, (url, sorted(urls))
    tagged = query(data, "SELECT count(*) FROM snapshot_tag WHERE tag = ?", [SQL_TAG])
    assert tagged == [(len(both["quoted"]),)]
