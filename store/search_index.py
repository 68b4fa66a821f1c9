"""An inverted index for full-text search that grows with each batch of snapshot text.

DuckDB's `PRAGMA create_fts_index` builds its index in one pass over the whole corpus and
cannot be updated, so the first search after a crawl of N snapshots paid O(N) (≈ 137 s at
10k). These tables hold the same information and are appended per batch instead:

- `search_doc(snapshot_id, doc, len)`: one row per indexed Snapshot; `doc` is a number from
  a sequence (postings carry 8 bytes, not a 36-character id) and `len` its count of terms.
- `search_term(term, doc, tf)`: one posting per (stemmed term, document) with its count.
- `search_stopword(sw)`: the fts extension's English stopword list, taken from the
  extension itself (`stopwords()`), so it cannot drift from the one DuckDB's fts uses.

Corpus statistics (document count, average length, document frequencies) are not stored:
the query computes them from these tables in the same statement that scores, so a batch
never rewrites a shared row (no write conflicts, nothing to keep in step).

Tokens are made exactly as the fts extension makes them (same `strip_accents`/`lower`, same
ignore pattern, stopwords dropped before stemming, the Porter `stem()` of the extension), and
BM25 has the extension's formula with k1 = 1.2, b = 0.75, over title and text together:
scores equal `match_bm25`'s (tests/analytics/test_search_incremental.py compares them).

A batch costs work proportional to the batch: its documents are tokenised in SQL, and a
changed snapshot's old postings are found through `doc`, which increases with insertion
order, so DuckDB's zone maps skip every row group that cannot hold them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Final

import duckdb
import polars as pl
from archiveflow.store.fts import load_sql

STEMMER: Final[str] = "porter"
K1: Final[float] = 1.2  # match_bm25's defaults, so rankings stay comparable with DuckDB fts
B: Final[float] = 0.75
# The fts extension's default `ignore` pattern (duckdb-extension-fts 1.5.5): every run of
# these characters separates words. A test checks tokenize() against the extension's macro.
IGNORE: Final[str] = r"""[0-9!@#$%^&*()_+={}\[\]:;<>,.?~\\/\|''"`-]+"""
BATCH_DOCS: Final[int] = 2000  # documents per tokenising statement (bounds its memory)
TABLES: Final[tuple[str, ...]] = ("search_doc", "search_term", "search_stopword")

DDL: Final[str] = """
CREATE SEQUENCE IF NOT EXISTS search_doc_seq;
CREATE TABLE IF NOT EXISTS search_doc (
    snapshot_id VARCHAR PRIMARY KEY,
    doc         BIGINT NOT NULL,
    len         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS search_term (
    term VARCHAR NOT NULL,
    doc  BIGINT NOT NULL,
    tf   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS search_stopword (sw VARCHAR NOT NULL);
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tokenize_sql(expr: str) -> str:
    """SQL for the list of raw tokens of `expr`, as the fts extension's `tokenize` makes it."""
    return (f"string_split_regex(regexp_replace(lower(strip_accents(CAST({expr} AS VARCHAR))), "
            f"{_literal(IGNORE)}, ' ', 'g'), '\\s+')")


@cache
def stopwords() -> tuple[str, ...]:
    """The fts extension's English stopword list, read from an index it builds in memory."""
    con = duckdb.connect()
    try:
        con.execute(load_sql())
        con.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
        con.execute("PRAGMA create_fts_index('t', 'id', 's')")
        return tuple(r[0] for r in con.execute(
            "SELECT DISTINCT sw FROM fts_main_t.stopwords ORDER BY sw").fetchall())
    finally:
        con.close()


def ensure_index_tables(cur: duckdb.DuckDBPyConnection) -> None:
    """Create the index tables if missing and fill the stopword list once."""
    cur.execute(DDL)
    row = cur.execute("SELECT count(*) FROM search_stopword").fetchone()
    if not row or not row[0]:
        cur.execute("INSERT INTO search_stopword SELECT unnest(?::VARCHAR[])",
                    [list(stopwords())])


def index_exists(cur: duckdb.DuckDBPyConnection) -> bool:
    """True when every index table is there (a read-only connection cannot create them)."""
    row = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
                      "AND table_name IN (SELECT unnest(?::VARCHAR[]))",
                      [list(TABLES)]).fetchone()
    return bool(row and row[0] == len(TABLES))


def drop_docs(cur: duckdb.DuckDBPyConnection, snapshot_ids: Sequence[str]) -> int:
    """Remove these snapshots' postings and documents; returns how many were indexed."""
    if not snapshot_ids:
        return 0
    docs = [r[0] for r in cur.execute(
        "SELECT doc FROM search_doc WHERE snapshot_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(snapshot_ids)]).fetchall()]
    if not docs:
        return 0  # new snapshots, the usual case: search_term is not even read
    # Row groups are skipped by their min/max of `doc` (which grows with insertion order):
    # the BETWEEN states that range; the IN list then picks the exact postings. Without
    # the pruning, changing one page would read every posting (a test counts the rows).
    cur.execute("DELETE FROM search_term WHERE doc BETWEEN ? AND ? "
                "AND doc IN (SELECT unnest(?::BIGINT[]))", [min(docs), max(docs), docs])
    cur.execute("DELETE FROM search_doc WHERE doc IN (SELECT unnest(?::BIGINT[]))", [docs])
    return len(docs)


_POSTINGS_SQL: Final[str] = f"""
    CREATE OR REPLACE TEMP TABLE _af_search_post AS
    SELECT doc, stem(w, '{STEMMER}') AS term, count(*)::INTEGER AS tf
    FROM (SELECT doc, unnest({tokenize_sql("coalesce(title, '') || ' ' || coalesce(text, '')")})
                 AS w
          FROM _af_search_docs)
    WHERE len(w) > 0 AND w NOT IN (SELECT sw FROM search_stopword)
    GROUP BY ALL
"""
_DOCS_SQL: Final[str] = """
    INSERT INTO search_doc (snapshot_id, doc, len)
    SELECT d.snapshot_id, d.doc, coalesce(l.len, 0)
    FROM _af_search_docs d
    LEFT JOIN (SELECT doc, sum(tf)::INTEGER AS len FROM _af_search_post GROUP BY doc) l
      USING (doc)
"""


def add_docs(cur: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> int:
    """Index the documents of `frame` (snapshot_id, title, text), replacing earlier versions.

    Runs in the caller's transaction; the fts extension must be loaded (for `stem`) and the
    tables made (`ensure_index_tables`). Returns the number of documents written."""
    if frame.is_empty():
        return 0
    frame = frame.select("snapshot_id", "title", "text").unique(
        subset=["snapshot_id"], keep="last", maintain_order=True)
    drop_docs(cur, frame["snapshot_id"].to_list())
    for start in range(0, frame.height, BATCH_DOCS):
        cur.register("_af_search_batch", frame.slice(start, BATCH_DOCS).to_arrow())
        try:
            cur.execute("CREATE OR REPLACE TEMP TABLE _af_search_docs AS "
                        "SELECT snapshot_id, nextval('search_doc_seq') AS doc, title, text "
                        "FROM _af_search_batch")
            cur.execute(_POSTINGS_SQL)
            cur.execute(_DOCS_SQL)
            cur.execute("INSERT INTO search_term (term, doc, tf) "
                        "SELECT term, doc, tf FROM _af_search_post ORDER BY doc, term")
        finally:
            cur.unregister("_af_search_batch")
            cur.execute("DROP TABLE IF EXISTS _af_search_post; "
                        "DROP TABLE IF EXISTS _af_search_docs")
    return frame.height


def clear(cur: duckdb.DuckDBPyConnection) -> None:
    """Empty the index (its stopword list stays)."""
    cur.execute("DELETE FROM search_term; DELETE FROM search_doc")


def bm25_sql(query_param: str = "$q") -> str:
    """A SELECT of (snapshot_id, score) for every document holding a word of the query,
    BM25 as DuckDB fts's `match_bm25` computes it (same k1, b and formula)."""
    return f"""
        WITH q AS (SELECT DISTINCT stem(unnest({tokenize_sql(query_param)}), '{STEMMER}')
                          AS term),
        st AS (SELECT count(*) AS n, avg(len) AS avgdl FROM search_doc),
        p AS (SELECT t.term, t.tf, d.snapshot_id, d.len
              FROM search_term t JOIN search_doc d USING (doc)
              WHERE t.term IN (SELECT term FROM q)),
        df AS (SELECT term, count(*) AS df FROM p GROUP BY term)
        SELECT p.snapshot_id,
               sum(log((st.n - df.df + 0.5) / (df.df + 0.5) + 1)
                   * ((p.tf * ({K1} + 1))
                      / (p.tf + {K1} * ((1 - {B}) + {B} * (p.len / st.avgdl))))) AS score
        FROM p JOIN df USING (term) CROSS JOIN st
        GROUP BY p.snapshot_id
    """
