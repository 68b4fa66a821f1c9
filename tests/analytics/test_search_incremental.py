"""The incremental search index (store/search_index.py) on a real DuckDB file, no crawl.

What holds it: a batch's text is searchable right after `index_snapshots` (the pipeline's
entry point), a changed snapshot's old words stop matching, scores equal DuckDB fts's
`match_bm25` on the same corpus, and indexing a batch never reads another document's
postings (DuckDB's own profiler counts the rows each statement scans).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from archiveflow.store import search, search_index
from archiveflow.store.db import Store


@dataclass
class Archive:
    """A data folder with an index and sealed snapshots whose text files we write."""

    data: Path
    store: Store

    @property
    def index(self) -> Path:
        return self.data / "index.duckdb"

    def add(self, texts: dict[str, str], *, title: str | None = None) -> list[str]:
        """Sealed snapshots `url → text` (files written, rows inserted); their ids."""
        ids = []
        with self.store.transaction() as cur:
            for url, text in texts.items():
                sid = f"snap-{abs(hash(url)) % 10**12:012d}-{len(url)}"
                out = f"users/default/snapshots/20261201/example.com/{sid}"
                self.write(out, text)
                cur.execute("INSERT INTO snapshot (id, crawl_id, url, status, output_dir, title) "
                            "VALUES (?, 'c1', ?, 'sealed', ?, ?)", [sid, url, out, title])
                ids.append(sid)
        return ids

    def write(self, output_dir: str, text: str) -> None:
        path = self.data / output_dir / search.TEXT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def rewrite(self, sid: str, text: str) -> None:
        row = self.store.cursor().execute(
            "SELECT output_dir FROM snapshot WHERE id = ?", [sid]).fetchone()
        assert row is not None
        self.write(row[0], text)

    def index_batch(self, ids: list[str], cur: Any = None) -> int:
        """What the crawl's indexer thread does after sealing: one transaction."""
        with self.store.transaction() as tx:
            return search.index_snapshots(cur or tx, self.data, ids)

    def find(self, text: str) -> list[str]:
        """URLs of a search through `run_search` (the index must be free: close first)."""
        self.store.close()
        try:
            return [h["url"] for h in search.run_search(self.index, search.SearchQuery(text))]
        finally:
            self.store = Store(self.index)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    data = tmp_path / "data"
    data.mkdir()
    a = Archive(data, Store(data / "index.duckdb"))
    try:
        yield a
    finally:
        a.store.close()


def test_a_new_batch_is_found_right_after_it_is_indexed(archive: Archive) -> None:
    a = archive.add({"https://example.com/a1": "marmalade recipes from the orchard",
                     "https://example.com/a2": "a field guide to orchard birds"})
    assert archive.index_batch(a) == 2
    assert archive.find("orchard") and set(archive.find("orchard")) == {
        "https://example.com/a1", "https://example.com/a2"}
    assert archive.find("volcano") == []
    b = archive.add({"https://example.com/b1": "volcano eruptions and orchard ash"})
    archive.index_batch(b)
    assert archive.find("volcanoes") == ["https://example.com/b1"]  # stemmed like fts
    assert len(archive.find("orchard")) == 3
    cur = archive.store.cursor()
    assert search.pending(cur) == 0
    # No whole-corpus FTS index was built on the way.
    assert cur.execute("SELECT count(*) FROM duckdb_schemas() "
                       "WHERE schema_name LIKE 'fts_%'").fetchone() == (0,)


def test_a_changed_snapshot_no_longer_matches_its_old_words(archive: Archive) -> None:
    ids = archive.add({"https://example.com/p": "purple okapi grazing",
                       "https://example.com/q": "an okapi in the zoo"})
    archive.index_batch(ids)
    archive.rewrite(ids[0], "now about a green heron")
    archive.index_batch([ids[0]])
    assert archive.find("purple") == []
    assert archive.find("okapi") == ["https://example.com/q"]
    assert archive.find("heron") == ["https://example.com/p"]
    cur = archive.store.cursor()
    # one document per snapshot, and no posting left behind by the old version
    assert cur.execute("SELECT count(*), count(DISTINCT snapshot_id) FROM search_doc"
                       ).fetchone() == (2, 2)
    assert cur.execute("SELECT count(*) FROM search_term WHERE doc NOT IN "
                       "(SELECT doc FROM search_doc)").fetchone() == (0,)
    # the same snapshot twice in one batch is indexed once
    archive.index_batch([ids[1], ids[1]])
    assert cur.execute("SELECT count(*) FROM search_doc").fetchone() == (2,)


def test_a_sealed_snapshot_nobody_indexed_is_added_by_the_next_search(
        archive: Archive) -> None:
    archive.add({"https://example.com/late": "a lighthouse keeper's diary"})
    assert search.pending(archive.store.cursor()) == 1
    assert archive.find("lighthouse") == ["https://example.com/late"]
    assert search.pending(archive.store.cursor()) == 0


def test_an_index_of_the_old_design_is_replaced(archive: Archive) -> None:
    """An index made by the previous archiveflow (snapshot_text + a whole-corpus FTS index +
    fts_state) is searchable at once: the old index goes, its text is indexed again."""
    ids = archive.add({"https://example.com/old": "an ancient tortoise"})
    cur = archive.store.cursor()
    cur.execute(search.DDL)
    cur.execute("INSERT INTO snapshot_text SELECT id, url, title, NULL, created_at, "
                "'an ancient tortoise' FROM snapshot WHERE id = ?", ids)
    cur.execute("CREATE TABLE fts_state (id INTEGER PRIMARY KEY, dirty BOOLEAN NOT NULL)")
    search.load_fts(cur)
    cur.execute("PRAGMA create_fts_index('snapshot_text', 'snapshot_id', 'title', 'text')")
    assert archive.find("tortoise") == ["https://example.com/old"]
    cur = archive.store.cursor()
    assert cur.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'fts_state' "
                       "OR schema_name = 'fts_main_snapshot_text'").fetchone() == (0,)


def test_reindex_rebuild_refills_the_index(archive: Archive) -> None:
    ids = archive.add({"https://example.com/r": "quartz crystals"})
    archive.index_batch(ids)
    archive.rewrite(ids[0], "granite boulders")
    with archive.store.transaction() as cur:
        assert search.rebuild_text(cur, archive.data) == 1
    # one transaction, so the postings are sorted into a run at its end
    assert archive.store.cursor().execute(
        "SELECT (SELECT count(*) FROM search_term_new), (SELECT count(*) > 0 FROM search_term)"
    ).fetchone() == (0, True)
    assert archive.find("granite") == ["https://example.com/r"]
    assert archive.find("quartz") == []


# --- same ranking as DuckDB fts -----------------------------------------------------------

WORDS = ("archive snapshot crawler crawl crawling page pages web website link links index "
         "indexed indexing search searches searching rank ranking ranked title text zebra "
         "okapi heron café naïve résumé über running runs runner data database duck ducks "
         "the and of to a in is it for").split()


def _corpus(n: int, seed: int) -> dict[str, str]:
    rnd = random.Random(seed)
    pages = {}
    for i in range(n):
        words = [rnd.choice(WORDS[: 10 + i % len(WORDS)]) for _ in range(rnd.randint(0, 60))]
        punct = rnd.choice(["", ".", ", ", "! ", " -- ", "'s ", " 42 "])
        pages[f"https://example.com/{i}"] = punct.join(words) if i % 3 else " ".join(words)
    return pages


def test_scores_equal_duckdb_fts_match_bm25(archive: Archive) -> None:
    ids = archive.add(_corpus(40, seed=7), title="Zebra Crawl Notes")
    archive.index_batch(ids[:25])
    with archive.store.transaction() as tx:
        search_index.flush(tx)  # the first batch's postings in a sorted run, the second not
    archive.index_batch(ids[25:])  # two batches: stats must come out as for one corpus
    assert _postings(archive) > archive.store.cursor().execute(
        "SELECT count(*) FROM search_term").fetchone()[0] > 0
    cur = archive.store.cursor()
    search.load_fts(cur)
    # The reference: DuckDB's own fts index over the same snapshot_text rows.
    cur.execute("PRAGMA create_fts_index('snapshot_text', 'snapshot_id', 'title', 'text')")
    for q in ["zebra", "crawling pages", "ducks database index", "café resume", "naive",
              "the", "okapi heron runner", "RANKED!! searches?", " -- ", "zebra zebras ZEBRA"]:
        terms = search_index.query_terms(cur, q)
        ours = cur.execute(f"SELECT snapshot_id, score FROM ({search_index.bm25_sql(len(terms))}) "
                           "ORDER BY score DESC, snapshot_id",
                           search_index.term_params(terms)).fetchall()
        ref = cur.execute(
            "SELECT snapshot_id, s FROM (SELECT snapshot_id, "
            "fts_main_snapshot_text.match_bm25(snapshot_id, $q) AS s FROM snapshot_text) "
            "WHERE s IS NOT NULL ORDER BY s DESC, snapshot_id", {"q": q}).fetchall()
        assert [r[0] for r in ours] == [r[0] for r in ref], q
        assert [r[1] for r in ours] == pytest.approx([r[1] for r in ref], rel=1e-12), q
    assert cur.execute("SELECT count(*) FROM snapshot_text").fetchone() == (40,)


TRICKY = ["Héllo, WORLD! it's 2026-12-01 Running runners", "tabs\tand\nnew\x0blines\f\rx",
          "a/b\\c|d'e\"f`g", "Ünïcödé ßtraße ÆØÅ ñ İstanbul", "", "  leading and trailing  ",
          "x_y-z+w=v~u", "no\u00a0break em\u2003space", "ﬁne ＦＵＬＬ ｗｉｄｔｈ", "ΣΊΣΥΦΟΣ Straße"]


def test_tokens_are_made_as_fts_makes_them() -> None:
    con = duckdb.connect()
    search.load_fts(con)
    con.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
    con.execute("INSERT INTO t SELECT i, s FROM (SELECT unnest(?::VARCHAR[]) AS s, "
                "generate_subscripts(?::VARCHAR[], 1) AS i)", [TRICKY, TRICKY])
    con.execute("PRAGMA create_fts_index('t', 'id', 's')")
    for s in TRICKY:
        ours = con.execute(f"SELECT {search_index.tokenize_sql('?')}", [s]).fetchone()
        ref = con.execute("SELECT fts_main_t.tokenize(?)", [s]).fetchone()
        assert ours == ref, s
    # The postings of the index (split and counted in polars) are fts's terms, counted.
    search_index.ensure_index_tables(con)
    docs = con.execute("SELECT rowid AS doc, NULL::VARCHAR AS title, s AS text FROM t").pl()
    ours_terms = sorted(search_index.postings(con, docs).rows())
    ref_terms = sorted(con.execute(
        "SELECT docid, term, count(*) FROM fts_main_t.terms JOIN fts_main_t.dict "
        "USING (termid) GROUP BY ALL").fetchall())
    assert ours_terms == ref_terms
    assert set(search_index.stopwords()) == {
        r[0] for r in con.execute("SELECT sw FROM fts_main_t.stopwords").fetchall()}


# --- a batch does work proportional to the batch -------------------------------------------

class _Result:
    def __init__(self, description: Any, frame: pl.DataFrame) -> None:
        self.description = description
        self._frame = frame

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._frame.rows()

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._frame.row(0) if self._frame.height else None

    def pl(self) -> pl.DataFrame:
        return self._frame


class ScanCounter:
    """A real DuckDB cursor whose statements are profiled: rows each table scan read."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, profile: Path) -> None:
        self.cur = cur
        self.profile = profile
        self.scanned: dict[str, int] = {}
        cur.execute("PRAGMA enable_profiling = 'json'")
        cur.execute(f"SET profiling_output = '{profile}'")
        cur.execute("SET custom_profiling_settings = '{\"OPERATOR_ROWS_SCANNED\": \"true\", "
                    "\"OPERATOR_TYPE\": \"true\", \"EXTRA_INFO\": \"true\"}'")

    def _walk(self, node: dict[str, Any]) -> None:
        table = (node.get("extra_info") or {}).get("Table")
        if table:
            name = table.split(".")[-1].strip('"')
            self.scanned[name] = self.scanned.get(name, 0) + int(
                node.get("operator_rows_scanned", 0))
        for child in node.get("children", []):
            self._walk(child)

    def execute(self, sql: str, params: Any = None) -> Any:
        for stmt in self.cur.extract_statements(sql):
            self.profile.unlink(missing_ok=True)
            res = self.cur.execute(stmt, params) if params is not None else self.cur.execute(stmt)
            # The profile is written once the result is consumed.
            frame = res.pl() if res.description else pl.DataFrame()
            if self.profile.exists():
                self._walk(json.loads(self.profile.read_text()))
        return _Result(res.description, frame)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cur, name)


def _word(n: int) -> str:
    """A distinct letters-only word for each n (the tokenizer drops digits)."""
    out = ""
    while True:
        n, r = divmod(n, 26)
        out += chr(97 + r)
        if not n:
            return "q" + out


def _postings(archive: Archive) -> int:
    row = archive.store.cursor().execute(
        "SELECT (SELECT count(*) FROM search_term) + (SELECT count(*) FROM search_term_new)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _scan_for_batch(archive: Archive, corpus: int, tmp_path: Path) -> dict[str, int]:
    ids = archive.add({f"https://example.com/c{corpus}-{i}": " ".join(
        _word(i * 40 + j) for j in range(40)) for i in range(corpus)})
    archive.index_batch(ids)
    batch = archive.add({f"https://example.com/new{corpus}-{i}": f"fresh batch text {i}"
                         for i in range(10)})
    counter = ScanCounter(archive.store.cursor(), tmp_path / f"profile-{corpus}.json")
    archive.index_batch(batch, cur=counter)
    counter.cur.execute("PRAGMA disable_profiling")
    return counter.scanned


def test_indexing_a_batch_reads_no_other_documents_postings(archive: Archive,
                                                            tmp_path: Path) -> None:
    small = _scan_for_batch(archive, 20, tmp_path)
    big = _scan_for_batch(archive, 400, tmp_path)
    # The postings table (40 rows per corpus document here) is never read for new
    # snapshots; what is read is the batch, the stopword list and per-snapshot tables
    # (through their primary key, except `snapshot`'s id column, which has none).
    for table in ("search_term", "search_term_new"):
        assert small.get(table, 0) == 0 and big.get(table, 0) == 0
    per_snapshot = {"snapshot", "snapshot_text", "search_doc", "search_stopword",
                    "search_term", "search_term_new"}  # (0 rows read, see above)
    assert set(big) <= per_snapshot, big
    # 20 times the corpus: the same work, but for that one narrow scan.
    assert {k: v for k, v in big.items() if k != "snapshot"} == {
        k: v for k, v in small.items() if k != "snapshot"}
    assert sum(big.values()) < _postings(archive) / 5


ROW_GROUP = 122_880  # rows of a DuckDB row group


def _big_index(archive: Archive, pages: int, words: int = 300, batch: int = 500,
               runs: bool = False) -> list[str]:
    """`pages` pages of `words` distinct words each (so postings span many row groups),
    indexed `batch` pages at a time; `runs`: each batch's postings sorted into a run."""
    ids = archive.add({f"https://example.com/g{i}": " ".join(_word(i * words + j)
                                                             for j in range(words))
                       for i in range(pages)})
    for i in range(0, len(ids), batch):
        archive.index_batch(ids[i:i + batch])
        if runs:
            with archive.store.transaction() as cur:
                search_index.flush(cur)
    return ids


@pytest.mark.parametrize("runs", [False, True], ids=["unsorted", "sorted-runs"])
def test_a_changed_snapshot_reads_only_the_row_groups_that_hold_it(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: bool) -> None:
    monkeypatch.setattr(search_index, "FLUSH_POSTINGS", 10**9)  # runs only where we say
    ids = _big_index(archive, 1500, runs=runs)
    total = _postings(archive)
    assert total > 3 * ROW_GROUP
    archive.rewrite(ids[-1], "a rewritten page")
    counter = ScanCounter(archive.store.cursor(), tmp_path / "profile-change.json")
    archive.index_batch([ids[-1]], cur=counter)
    counter.cur.execute("PRAGMA disable_profiling")
    read = counter.scanned.get("search_term", 0) + counter.scanned.get("search_term_new", 0)
    assert 0 < read <= 2 * ROW_GROUP, counter.scanned
    assert archive.find(_word((len(ids) - 1) * 300)) == []
    assert archive.find("rewritten") == [f"https://example.com/g{len(ids) - 1}"]


def test_a_query_reads_a_few_row_groups_per_sorted_run(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "FLUSH_POSTINGS", 10**9)
    _big_index(archive, 400, words=3000, batch=200, runs=True)  # 2 runs of 600k postings
    cur = archive.store.cursor()
    sorted_rows = cur.execute("SELECT count(*) FROM search_term").fetchone()
    assert sorted_rows is not None and sorted_rows[0] > 9 * ROW_GROUP  # (stems may merge)
    word = _word(123 * 3000 + 7)
    counter = ScanCounter(cur, tmp_path / "profile-query.json")
    terms = search_index.query_terms(cur, word)
    hits = counter.execute(search_index.bm25_sql(len(terms)),
                           search_index.term_params(terms)).fetchall()
    cur.execute("PRAGMA disable_profiling")
    assert len(hits) == 1
    # one row group per run, where an unsorted table is read whole
    assert counter.scanned["search_term"] <= 2 * ROW_GROUP, counter.scanned
