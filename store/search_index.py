"""An inverted index for full-text search that grows with each batch of snapshot text.

DuckDB's `PRAGMA create_fts_index` builds its index in one pass over the whole corpus and
cannot be updated, so the first search after a crawl of N snapshots paid a rebuild linear
(or worse) in N (bench/search.py measures it beside this index). These tables hold the same
information and are appended per batch instead:

- `search_doc(snapshot_id, doc, len)`: one row per indexed Snapshot; `doc` is a number from
  a sequence (postings carry 8 bytes, not a 36-character id) and `len` its count of terms.
- `search_term_new(term, doc, tf)`: one posting per (stemmed term, document) with its
  count, as batches append them (in document order).
- `search_term`: the same postings in sorted runs. When `search_term_new` holds
  FLUSH_POSTINGS rows, they move here in one `INSERT … ORDER BY term, doc` (work
  proportional to the batches since the last move, never to the corpus). Within a run the
  rows of a term are contiguous, so DuckDB's zone maps let a query read a few row groups per
  run instead of every posting (measured on 10k pages: 3.5 M postings, 0.06 s unsorted,
  0.004 s as 4 runs).
- `search_stopword(sw)`: the fts extension's English stopword list, taken from the
  extension itself (`stopwords()`), so it cannot drift from the one DuckDB's fts uses.

Corpus statistics (document count, average length, document frequencies) are not stored:
the query computes them from these tables in the same statement that scores, so a batch
never rewrites a shared row (no write conflicts, nothing to keep in step).

Tokens are made exactly as the fts extension makes them (same `strip_accents`/`lower`, same
ignore pattern, stopwords dropped before stemming, the Porter `stem()` of the extension), and
BM25 has the extension's formula with k1 = 1.2, b = 0.75, over title and text together:
scores equal `match_bm25`'s (tests/analytics/test_search_incremental.py compares them).

A batch costs work proportional to the batch: only its documents are tokenised, and a
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
from archiveflow.store.load import fetch_frame, scan

STEMMER: Final[str] = "porter"
K1: Final[float] = 1.2  # match_bm25's defaults, so rankings stay comparable with DuckDB fts
B: Final[float] = 0.75
# The fts extension's default `ignore` pattern (duckdb-extension-fts 1.5.5): every run of
# these characters separates words. A test checks tokenize() against the extension's macro.
IGNORE: Final[str] = r"""[0-9!@#$%^&*()_+={}\[\]:;<>,.?~\\/\|''"`-]+"""
BATCH_DOCS: Final[int] = 2000  # documents tokenised at once (bounds memory)
# Postings gathered before they are sorted into a run of search_term: about 3k pages. A
# query reads this many rows unsorted at most, plus a few row groups per run.
FLUSH_POSTINGS: int = 1_000_000
TABLES: Final[tuple[str, ...]] = ("search_doc", "search_term", "search_term_new",
                                  "search_stopword")

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
_NEW_DDL: Final[str] = """
CREATE TABLE IF NOT EXISTS search_term_new (
    term VARCHAR NOT NULL,
    doc  BIGINT NOT NULL,
    tf   INTEGER NOT NULL
);
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
    cur.execute(DDL + _NEW_DDL)
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
    # Row groups are skipped by their min/max of `doc`: it grows with insertion order, and
    # a run holds the documents of one range. The BETWEEN states that range; the IN list
    # then picks the exact postings. Without the pruning, changing one page would read
    # every posting (a test counts the rows).
    for table in ("search_term_new", "search_term"):
        cur.execute(f"DELETE FROM {table} WHERE doc BETWEEN ? AND ? "
                    "AND doc IN (SELECT unnest(?::BIGINT[]))", [min(docs), max(docs), docs])
    cur.execute("DELETE FROM search_doc WHERE doc IN (SELECT unnest(?::BIGINT[]))", [docs])
    return len(docs)


# Normalising runs in DuckDB (its strip_accents and lower, so characters map exactly as in
# fts); splitting, counting and dropping stopwords run in polars, and only the distinct
# words of a batch are stemmed in DuckDB. Measured on 1,000 pages of 600 words: 0.5 s,
# against 3.4 s for the same postings made by one SQL statement (unnest + stem + GROUP BY).
_NORMALISE_SQL: Final[str] = (
    "SELECT doc, regexp_replace(lower(strip_accents(coalesce(title, '') || ' ' || "
    f"coalesce(text, ''))), {_literal(IGNORE)}, ' ', 'g') AS s FROM _af_search_batch")
# What RE2's `\s` (fts's word separator) matches; no other character separates words.
_RE2_SPACE: Final[str] = r"[\t\n\f\r]"


def postings(cur: duckdb.DuckDBPyConnection, docs: pl.DataFrame) -> pl.DataFrame:
    """(doc, term, tf) of `docs` (doc, title, text), the terms as fts's index makes them.
    The fts extension must be loaded (for `stem`)."""
    cur.register("_af_search_batch", scan(cur, docs.select("doc", "title", "text")))
    try:
        norm = fetch_frame(cur, _NORMALISE_SQL)
    finally:
        cur.unregister("_af_search_batch")
    stop = [r[0] for r in cur.execute("SELECT sw FROM search_stopword").fetchall()]
    words = (norm.lazy()
             .select("doc", pl.col("s").str.replace_all(_RE2_SPACE, " ").str.split(" ")
                     .alias("w"))
             .explode("w")
             .filter((pl.col("w").str.len_bytes() > 0) & ~pl.col("w").is_in(stop))
             .group_by("doc", "w").agg(pl.len().alias("n"))
             .collect())
    cur.register("_af_search_words", scan(cur, words.select(pl.col("w").unique())))
    try:
        stems = fetch_frame(cur, f"SELECT w, stem(w, '{STEMMER}') AS term FROM _af_search_words")
    finally:
        cur.unregister("_af_search_words")
    return (words.join(stems, on="w")
            .group_by("doc", "term").agg(pl.col("n").sum().cast(pl.Int32).alias("tf"))
            .sort("doc", "term"))


def _insert(cur: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    cols = ", ".join(frame.columns)
    cur.register("_af_search_rows", scan(cur, frame))
    try:
        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _af_search_rows")
    finally:
        cur.unregister("_af_search_rows")


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
        chunk = frame.slice(start, BATCH_DOCS)
        ids = fetch_frame(cur, "SELECT nextval('search_doc_seq') AS doc FROM range(?) ORDER BY 1",
                          [chunk.height])
        chunk = chunk.with_columns(ids["doc"].cast(pl.Int64))
        post = postings(cur, chunk)
        lens = post.group_by("doc").agg(pl.col("tf").sum().cast(pl.Int32).alias("len"))
        docs = (chunk.select("snapshot_id", "doc").join(lens, on="doc", how="left")
                .with_columns(pl.col("len").fill_null(0)))
        _insert(cur, "search_doc", docs)
        _insert(cur, "search_term_new", post.select("term", "doc", "tf"))
    # The catalog's row count (committed rows, no scan): counting would read the tail.
    row = cur.execute("SELECT estimated_size FROM duckdb_tables() WHERE schema_name = 'main' "
                      "AND table_name = 'search_term_new'").fetchone()
    if row and row[0] >= FLUSH_POSTINGS:
        flush(cur)
    return frame.height


def flush(cur: duckdb.DuckDBPyConnection) -> None:
    """Move the recent postings into search_term as one run sorted by term."""
    cur.execute("INSERT INTO search_term (term, doc, tf) "
                "SELECT term, doc, tf FROM search_term_new ORDER BY term, doc")
    # A new table rather than DELETE: its row count restarts at 0 (see add_docs), and
    # the old row groups go at once.
    cur.execute("DROP TABLE search_term_new")
    cur.execute(_NEW_DDL)


def clear(cur: duckdb.DuckDBPyConnection) -> None:
    """Empty the index (its stopword list stays)."""
    cur.execute("DELETE FROM search_term; DELETE FROM search_term_new; DELETE FROM search_doc")


def query_terms(cur: duckdb.DuckDBPyConnection, text: str) -> list[str]:
    """The distinct stemmed terms of a query, as `match_bm25` makes them (never empty: a
    query of separators only gives [''], which no document holds)."""
    rows = cur.execute(f"SELECT DISTINCT stem(unnest({tokenize_sql('?')}), '{STEMMER}') AS t "
                       "ORDER BY t", [text]).fetchall()
    return [r[0] for r in rows] or [""]


def term_params(terms: Sequence[str]) -> dict[str, str]:
    """The named parameters `$t0 … $tN` of bm25_sql(len(terms))."""
    return {f"t{i}": t for i, t in enumerate(terms)}


def bm25_sql(n_terms: int) -> str:
    """A SELECT of (snapshot_id, score) for every document holding one of the query's
    terms (`$t0 … $tN`, see query_terms), BM25 as DuckDB fts's `match_bm25` computes it
    (same k1, b and formula). The terms are constants in the statement (placeholders, not
    a subquery) so DuckDB filters them inside the scan of search_term: 2-4x faster."""
    terms = ", ".join(f"$t{i}" for i in range(max(1, n_terms)))
    return f"""
        WITH st AS (SELECT count(*) AS n, avg(len) AS avgdl FROM search_doc),
        p AS (SELECT t.term, t.tf, d.snapshot_id, d.len
              FROM (SELECT term, doc, tf FROM search_term WHERE term IN ({terms})
                    UNION ALL
                    SELECT term, doc, tf FROM search_term_new WHERE term IN ({terms})) t
              JOIN search_doc d USING (doc)),
        df AS (SELECT term, count(*) AS df FROM p GROUP BY term)
        SELECT p.snapshot_id,
               sum(log((st.n - df.df + 0.5) / (df.df + 0.5) + 1)
                   * ((p.tf * ({K1} + 1))
                      / (p.tf + {K1} * ((1 - {B}) + {B} * (p.len / st.avgdl))))) AS score
        FROM p JOIN df USING (term) CROSS JOIN st
        GROUP BY p.snapshot_id
    """
