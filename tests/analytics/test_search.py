"""Full-text search: the fts extension from the wheel, BM25 ranking, snippets, filters."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from archiveflow.store import search
from tests.flows.conftest import run_cli

PHRASE = "the quick zebra of archiveflow"  # only tests/fixtures/site/page2.html has it


def _search(data: Path, *args: str) -> list[dict[str, Any]]:
    proc = run_cli(data, "search", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_extension_is_loaded_from_the_wheel() -> None:
    path = search.fts_extension_path()
    assert path.is_file() and path.suffix == ".duckdb_extension"
    assert f"v{duckdb.__version__}" in path.parts
    con = duckdb.connect()
    search.load_fts(con)
    assert con.execute("SELECT stem('zebras', 'porter')").fetchone() == ("zebra",)


def test_phrase_on_one_page_ranks_that_page_first(archive: dict[str, Any]) -> None:
    hits = _search(archive["data"], PHRASE)
    assert hits, "no result"
    assert hits[0]["url"] == f"{archive['site']}/page2.html"
    assert hits[0]["title"] == "Page Two"
    assert PHRASE in hits[0]["snippet"].lower()
    assert all(h["score"] < hits[0]["score"] for h in hits[1:])
    # As an exact phrase, only that page matches.
    exact = _search(archive["data"], f'"{PHRASE}"')
    assert [h["url"] for h in exact] == [f"{archive['site']}/page2.html"]


def _find(data: Path, text: str, **filters: Any) -> list[str]:
    hits = search.run_search(data / "index.duckdb", search.SearchQuery(text, **filters))
    return [h["url"] for h in hits]


def test_filters(archive: dict[str, Any]) -> None:
    data, page2 = archive["data"], f"{archive['site']}/page2.html"
    assert _search(data, "zebra", "--domain", "127.0.0.1", "--tag", "analytics")[0]["url"] \
        == page2
    assert _find(data, "zebra", domain="127.0.0.1") == [page2]
    assert _find(data, "zebra", domain="example.com") == []
    assert _find(data, "zebra", tag="analytics") == [page2]
    # page two was captured in the first crawl only, which did not tag "second"
    assert _find(data, "zebra", tag="second") == []
    assert _find(data, "welcome test site", tag="second") == [f"{archive['site']}/index.html"]
    assert _find(data, "zebra", since=date.today() + timedelta(days=1)) == []
    assert _find(data, "zebra", since=date.today() - timedelta(days=1)) == [page2]
    assert len(_find(data, "page", limit=2)) == 2


def test_index_snapshots_keeps_text_in_step(archive: dict[str, Any], tmp_path: Path) -> None:
    """What the pipeline calls after sealing: the text row and its postings replaced in the
    same transaction; the next search finds the new words and not the old ones."""
    import shutil

    from archiveflow.store.db import Store

    data = tmp_path / "data"
    shutil.copytree(archive["data"], data, ignore=shutil.ignore_patterns("prefect"))
    store = Store(data / "index.duckdb")
    try:
        cur = store.cursor()
        ids = [r[0] for r in cur.execute(
            "SELECT id FROM snapshot WHERE url LIKE '%/page2.html'").fetchall()]
        row = cur.execute("SELECT output_dir FROM snapshot WHERE id = ?", ids).fetchone()
        assert row is not None
        snap_dir = data / row[0]
        (snap_dir / search.TEXT_FILE).write_text("now about a purple okapi", encoding="utf-8")
        with store.transaction() as tx:
            assert search.index_snapshots(tx, data, ids) == 1
        assert search.pending(cur) == 0
        assert cur.execute("SELECT count(*) FROM snapshot_text WHERE snapshot_id = ?",
                           ids).fetchone() == (1,)
    finally:
        store.close()
    hits = search.run_search(data / "index.duckdb", search.SearchQuery("okapi"))
    assert [h["snapshot_id"] for h in hits] == ids
    assert search.run_search(data / "index.duckdb", search.SearchQuery("zebra")) == []
