"""A crawl's snapshots are searchable right after it ends, with no rebuild at search time.

The crawl (the installed command, a real Prefect run) indexes each batch of sealed snapshots
as it goes; afterwards the index holds every page's text and postings, so `run_search`
answers from a read-only connection, writing nothing, and no whole-corpus FTS index exists.
"""

from __future__ import annotations

from pathlib import Path

from archiveflow.store import search
from archiveflow.store.readonly import read_only_connection
from tests.flows.conftest import run_cli

PHRASE = "the quick zebra of archiveflow"  # only tests/fixtures/site/page2.html has it


def test_a_crawl_leaves_its_snapshots_indexed(tmp_path: Path, site_url: str,
                                              analytics_api: str) -> None:
    data = tmp_path / "data"
    proc = run_cli(data, "add", "--depth", "1", "--allow-private",
                   "--plugins", "wget,title,htmltotext,parse_html_urls", f"{site_url}/index.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = data / "index.duckdb"
    size_before = index.stat().st_size
    with read_only_connection(index, preload=[search.load_sql()]) as con:
        assert search.tables_exist(con)
        assert search.pending(con) == 0  # nothing left for the search to index
        row = con.execute("SELECT count(*) FROM search_doc d JOIN snapshot s "
                          "ON s.id = d.snapshot_id WHERE s.status = 'sealed'").fetchone()
        assert row is not None and row[0] >= 4  # index.html and the pages it links
        assert con.execute("SELECT count(*) FROM duckdb_schemas() "
                           "WHERE schema_name LIKE 'fts_%'").fetchone() == (0,)
        # the read-only path answers as is
        hits = search.search(con, search.SearchQuery(PHRASE))
    assert hits and hits[0]["url"] == f"{site_url}/page2.html"
    assert [h["url"] for h in search.run_search(index, search.SearchQuery(f'"{PHRASE}"'))] == [
        f"{site_url}/page2.html"]
    assert not index.with_name(index.name + ".wal").exists()
    assert index.stat().st_size == size_before  # the search wrote nothing
