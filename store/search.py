"""Full-text search over the readable text of every Snapshot, kept up to date per batch.

- `snapshot_text` holds one row per sealed Snapshot: id, url, title, domain, its capture
  time and the text `htmltotext` saved (for filters, exact phrases and snippets).
- The ranking uses our own inverted index (store/search_index.py: `search_doc`,
  `search_term`), BM25 scored at query time in one statement with the formula and k1/b of
  DuckDB's fts extension. Unlike `PRAGMA create_fts_index`, which can only rebuild the
  whole corpus (146 s at 100k snapshots in bench/search.py), it is appended per batch: the
  pipeline calls `index_snapshots()` from a thread off the write path after it seals
  snapshots, and the work is proportional to the batch.
- Any sealed snapshot whose text is not indexed yet (a failed or missed call, an archive
  made before search existed) is indexed by the next search, the same way, so a failure
  here only delays its text until then.
- The fts extension is still needed, for `stem()`: loaded from the `duckdb-extension-fts`
  wheel (store/fts.py), never downloaded. An index built by an older archiveflow (an
  `fts_main_snapshot_text` schema, `fts_state`) is dropped and its text re-indexed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import duckdb
import polars as pl

from archiveflow.store import search_index
from archiveflow.store.db import is_shared
from archiveflow.store.fts import SearchError, fts_extension_path, load_fts, load_sql
from archiveflow.store.load import scan

if TYPE_CHECKING:
    import pyarrow as pa

    from archiveflow.store.db import Store

__all__ = ["SearchError", "SearchQuery", "fts_extension_path", "index_snapshots", "load_fts",
           "load_sql", "rebuild_text", "run_search", "serve_search"]

TEXT_CAP: Final[int] = 1_000_000  # characters of a page's text that are indexed
TEXT_FILE: Final[str] = "htmltotext/htmltotext.txt"
SNIPPET_CHARS: Final[int] = 160
CATCH_UP_BATCH: Final[int] = 2000  # snapshots whose files are read per transaction
_WORD = re.compile(r"\w+", re.UNICODE)
T = TypeVar("T")
_LEGACY_FTS: Final[str] = "fts_main_snapshot_text"  # the schema of the old whole-corpus index

DDL: Final[str] = """
CREATE TABLE IF NOT EXISTS snapshot_text (
    snapshot_id VARCHAR PRIMARY KEY,
    url         VARCHAR NOT NULL,
    title       VARCHAR,
    domain      VARCHAR,
    captured_at TIMESTAMPTZ,
    text        VARCHAR NOT NULL
);
"""

_SCHEMA: Final[dict[str, Any]] = {
    "snapshot_id": pl.Utf8, "url": pl.Utf8, "title": pl.Utf8, "domain": pl.Utf8,
    "captured_at": pl.Datetime("us", "UTC"), "text": pl.Utf8,
}
_SNAPSHOT_COLUMNS: Final[str] = "id, url, title, output_dir, created_at"


def ensure_tables(cur: duckdb.DuckDBPyConnection) -> None:
    """Create snapshot_text and the index tables if missing (idempotent); drop the index
    of an older archiveflow (its text is indexed again from snapshot_text)."""
    if is_shared(cur):  # the index's ids come from a sequence, which DuckLake has not
        raise SearchError("full-text search is not available on the shared index yet "
                          "(docs/scaling.md)")
    cur.execute(DDL)
    search_index.ensure_index_tables(cur)
    row = cur.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ?",
                      [_LEGACY_FTS]).fetchone()
    if row and row[0]:
        cur.execute(f"DROP SCHEMA {_LEGACY_FTS} CASCADE")
    cur.execute("DROP TABLE IF EXISTS fts_state")


def _read_text(snap_dir: Path) -> str:
    try:
        with open(snap_dir / TEXT_FILE, encoding="utf-8", errors="replace") as f:
            return f.read(TEXT_CAP)
    except OSError:
        return ""


def text_rows(data_dir: Path, snapshots: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """snapshot_text rows for snapshots (id, url, title, output_dir, created_at)."""
    rows = [{
        "snapshot_id": s["id"], "url": s["url"], "title": s.get("title"),
        "domain": None, "captured_at": s.get("created_at"),
        "text": _read_text(data_dir / s["output_dir"]),
    } for s in snapshots]
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


def _snapshots(cur: duckdb.DuckDBPyConnection, sql: str, params: Any = None
               ) -> list[dict[str, Any]]:
    res = cur.execute(sql, params) if params is not None else cur.execute(sql)
    cols = [d[0] for d in res.description or []]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def index_snapshots(cur: duckdb.DuckDBPyConnection, data_dir: Path,
                    snapshot_ids: Sequence[str], *, ensure: bool = True) -> int:
    """Put the text of these snapshots into snapshot_text and the search index (replacing
    earlier versions). Runs inside the caller's transaction; returns rows written; the work
    is proportional to the batch. `ensure=False`: the caller already made the tables."""
    if not snapshot_ids:
        return 0
    if ensure:
        ensure_tables(cur)
    snaps = _snapshots(cur, f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshot "
                            "WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(snapshot_ids)])
    return write_text_rows(cur, text_rows(Path(data_dir), snaps), ensure=False)


def write_text_rows(cur: duckdb.DuckDBPyConnection, df: pl.DataFrame, *,
                    ensure: bool = True) -> int:
    """Replace snapshot_text rows with these (one DELETE, one INSERT) and index them."""
    if df.is_empty():
        return 0
    if ensure:
        ensure_tables(cur)
    df = df.unique(subset=["snapshot_id"], keep="last", maintain_order=True)
    cur.register("_af_text", scan(cur, df))
    try:
        cur.execute("DELETE FROM snapshot_text WHERE snapshot_id IN "
                    "(SELECT unnest(?::VARCHAR[]))", [df["snapshot_id"].to_list()])
        cur.execute("INSERT INTO snapshot_text SELECT snapshot_id, url, title, "
                    "url_domain(url), captured_at, text FROM _af_text")
    finally:
        cur.unregister("_af_text")
    load_fts(cur)  # stem(); a no-op once loaded
    search_index.add_docs(cur, df)
    return df.height


def rebuild_text(cur: duckdb.DuckDBPyConnection, data_dir: Path) -> int:
    """Refill snapshot_text and the index from every sealed snapshot's files (e.g. after
    reindex), CATCH_UP_BATCH snapshots at a time so memory stays bounded."""
    ensure_tables(cur)
    cur.execute("DELETE FROM snapshot_text")
    search_index.clear(cur)
    snaps = _snapshots(cur, f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshot "
                            "WHERE status = 'sealed' ORDER BY created_at, id")
    n = 0
    for i in range(0, len(snaps), CATCH_UP_BATCH):
        n += write_text_rows(cur, text_rows(Path(data_dir), snaps[i:i + CATCH_UP_BATCH]),
                             ensure=False)
    # One transaction: add_docs's size check sees committed rows only, so sort it all now.
    search_index.flush(cur)
    return n


@dataclass(frozen=True)
class SearchQuery:
    """A ranked search: the words, and optional filters."""

    text: str
    domain: str | None = None
    tag: str | None = None
    since: date | datetime | None = None
    limit: int = 20

    @property
    def phrase(self) -> str | None:
        """A query in double quotes must appear as written (case-insensitive)."""
        t = self.text.strip()
        if len(t) > 2 and t.startswith('"') and t.endswith('"'):
            return t[1:-1]
        return None

    @property
    def terms(self) -> str:
        return self.text.strip().strip('"')


def search_sql(n_terms: int = 1) -> str:
    """The ranked search statement for a query of `n_terms` stemmed terms; its parameters
    are `search_params()`'s.

    Filters and ranking first, over the matching documents; the full text (for snippets)
    is read only for the `limit` rows returned."""
    return f"""
        WITH s AS ({search_index.bm25_sql(n_terms)}),
        hits AS (
            SELECT s.snapshot_id, s.score, t.captured_at
            FROM s JOIN snapshot_text t USING (snapshot_id)
            WHERE ($phrase IS NULL OR strpos(lower(coalesce(t.title, '') || ' ' || t.text),
                                             lower($phrase)) > 0)
              AND ($domain IS NULL OR t.domain = lower($domain)
                   OR t.domain LIKE '%.' || lower($domain))
              AND ($tag IS NULL OR EXISTS (SELECT 1 FROM snapshot_tag g
                                          WHERE g.snapshot_id = t.snapshot_id AND g.tag = $tag))
              AND ($since IS NULL OR t.captured_at >= $since::TIMESTAMPTZ)
            ORDER BY s.score DESC, t.captured_at DESC, s.snapshot_id
            LIMIT $limit)
        SELECT t.snapshot_id, t.url, t.title, t.domain, t.captured_at,
               round(h.score, 4) AS score, t.text,
               (SELECT coalesce(string_agg(g.tag, ',' ORDER BY g.tag), '')
                FROM snapshot_tag g WHERE g.snapshot_id = t.snapshot_id) AS tags
        FROM hits h JOIN snapshot_text t USING (snapshot_id)
        ORDER BY h.score DESC, h.captured_at DESC, h.snapshot_id
    """


def search_params(q: SearchQuery, terms: Sequence[str]) -> dict[str, Any]:
    """Named parameters of search_sql(len(terms)) for a query and its stemmed terms."""
    return {**search_index.term_params(terms), "phrase": q.phrase, "domain": q.domain,
            "tag": q.tag, "since": q.since.isoformat() if q.since else None,
            "limit": int(q.limit)}


def _execute_search(cur: duckdb.DuckDBPyConnection, q: SearchQuery
                    ) -> duckdb.DuckDBPyConnection:
    terms = search_index.query_terms(cur, q.terms)
    return cur.execute(search_sql(len(terms)), search_params(q, terms))


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around the first match of a query word,
    on one line, with `…` where it was cut."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    low = flat.lower()
    phrase = query.strip().strip('"').lower()
    pos = low.find(phrase) if phrase else -1
    if pos < 0:
        hits = [low.find(w.lower()) for w in _WORD.findall(query) if len(w) > 2]
        hits = [h for h in hits if h >= 0]
        pos = min(hits) if hits else 0
    start = max(0, pos - width // 3)
    end = min(len(flat), start + width)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


def search(cur: duckdb.DuckDBPyConnection, q: SearchQuery) -> list[dict[str, Any]]:
    """Run a ranked search on a connection that has fts loaded and the index up to date."""
    res = _execute_search(cur, q)
    return rows_with_snippets(
        [d[0] for d in res.description or []], res.fetchall(), q)


def rows_with_snippets(columns: Sequence[str], rows: Sequence[Sequence[Any]], q: SearchQuery
                       ) -> list[dict[str, Any]]:
    """Result rows as dicts, the full text replaced by a snippet around the first match."""
    out = []
    for r in rows:
        d = dict(zip(columns, r, strict=True))
        d["snippet"] = snippet(d.pop("text") or "", q.terms)
        out.append(d)
    return out


# Sealed snapshots whose text is not in snapshot_text, and texts not in the index.
_MISSING_TEXT_SQL: Final[str] = f"""
    SELECT {_SNAPSHOT_COLUMNS} FROM snapshot s WHERE s.status = 'sealed'
    AND NOT EXISTS (SELECT 1 FROM snapshot_text t WHERE t.snapshot_id = s.id)
    ORDER BY s.created_at, s.id LIMIT {CATCH_UP_BATCH}
"""
_UNINDEXED_SQL: Final[str] = f"""
    SELECT t.snapshot_id, t.title, t.text FROM snapshot_text t
    WHERE NOT EXISTS (SELECT 1 FROM search_doc d WHERE d.snapshot_id = t.snapshot_id)
    LIMIT {CATCH_UP_BATCH}
"""
_PENDING_SQL: Final[str] = """
    SELECT (SELECT count(*) FROM snapshot s WHERE s.status = 'sealed'
            AND NOT EXISTS (SELECT 1 FROM snapshot_text t WHERE t.snapshot_id = s.id))
         + (SELECT count(*) FROM snapshot_text t
            WHERE NOT EXISTS (SELECT 1 FROM search_doc d WHERE d.snapshot_id = t.snapshot_id))
"""


def tables_exist(cur: duckdb.DuckDBPyConnection) -> bool:
    """True when snapshot_text and the index tables are there."""
    row = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
                      "AND table_name = 'snapshot_text'").fetchone()
    return bool(row and row[0]) and search_index.index_exists(cur)


def pending(cur: duckdb.DuckDBPyConnection) -> int:
    """Sealed snapshots whose text the index does not hold yet (the next search adds them)."""
    if not tables_exist(cur):
        row = cur.execute("SELECT count(*) FROM snapshot WHERE status = 'sealed'").fetchone()
        return int(row[0]) if row else 0
    row = cur.execute(_PENDING_SQL).fetchone()
    return int(row[0]) if row else 0


def _in_transaction(cur: duckdb.DuckDBPyConnection, work: Callable[[], T]) -> T:
    from archiveflow.store.errors import WriteConflict

    cur.execute("BEGIN")
    try:
        out = work()
        cur.execute("COMMIT")
        return out
    except BaseException as e:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass
        # The crawl's indexer thread may have just added the same snapshot: do it again.
        if isinstance(e, duckdb.ConstraintException):
            raise WriteConflict(str(e).splitlines()[0]) from e
        raise


def catch_up(cur: duckdb.DuckDBPyConnection, data_dir: Path, *, rebuild: bool = False
             ) -> int:
    """Index every sealed snapshot whose text the index lacks, CATCH_UP_BATCH per
    transaction (work proportional to what is missing); `rebuild` first empties it.
    Returns the number of documents added. Works on any connection that may write."""
    ensure_tables(cur)
    load_fts(cur)
    if rebuild:
        def empty() -> None:
            cur.execute("DELETE FROM snapshot_text")
            search_index.clear(cur)

        _in_transaction(cur, empty)
    added = 0
    while snaps := _snapshots(cur, _MISSING_TEXT_SQL):
        rows = text_rows(data_dir, snaps)
        added += _in_transaction(cur, partial(write_text_rows, cur, rows, ensure=False))
    while True:
        frame = cur.execute(_UNINDEXED_SQL).pl()
        if frame.is_empty():
            return added
        added += _in_transaction(cur, partial(search_index.add_docs, cur, frame))


def query_to_json(q: SearchQuery) -> dict[str, Any]:
    """A search as the JSON the read socket carries (store/reader.py)."""
    return {"text": q.text, "domain": q.domain, "tag": q.tag,
            "since": q.since.isoformat() if q.since else None, "limit": int(q.limit)}


def query_from_json(data: Any) -> SearchQuery:
    """The SearchQuery of `query_to_json`'s output; SearchError if it is malformed."""
    try:
        since = data.get("since")
        return SearchQuery(
            text=str(data["text"]),
            domain=None if data.get("domain") is None else str(data["domain"]),
            tag=None if data.get("tag") is None else str(data["tag"]),
            since=datetime.fromisoformat(since) if since else None,
            limit=int(data.get("limit", 20)))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise SearchError(f"malformed search request: {e}") from e


def serve_search(store: Store, q: SearchQuery, *, rebuild: bool = False) -> pa.Table:
    """The writer's side of a search asked through the read socket: index what is missing
    with this process's own statements, then the ranked search's rows (an Arrow table; the
    client cuts the snippets)."""
    import pyarrow as pa

    from archiveflow.store.db import map_errors, retry_conflicts

    cur = store.cursor()

    def prepare() -> None:
        # The crawl indexes as it seals snapshots: a conflict with it is retried.
        with map_errors(store.path):
            catch_up(cur, Path(store.path).parent, rebuild=rebuild)

    retry_conflicts(prepare)
    res = _execute_search(cur, q)
    return res.to_arrow_table() if res.description else pa.table({})


def run_search(index_path: Path, q: SearchQuery, *, rebuild: bool = False
               ) -> list[dict[str, Any]]:
    """Search the index at `index_path`, whoever holds it.

    Sealed snapshots whose text is not indexed yet are added first (read from their
    folders), then the ranked search. When no process writes the index, a read-only
    connection is enough unless that work is needed (then it opens the index read-write,
    briefly). When a crawl holds it, the crawl does that work and the search
    (`serve_search`), asked through the read socket. `rebuild` re-reads every text first.
    """
    from archiveflow.store.db import Store
    from archiveflow.store.reader import Reader
    from archiveflow.store.readonly import read_only_connection

    with Reader(index_path) as reader:
        if reader.via_writer:
            table = reader.search_table(query_to_json(q), rebuild=rebuild)
            cols = table.column_names
            rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
            return rows_with_snippets(cols, rows, q)
    if not rebuild:
        # The fts extension is loaded before the connection is locked down (no file access).
        with read_only_connection(index_path, preload=[load_sql()]) as con:
            if tables_exist(con) and not pending(con):
                return search(con, q)
    store = Store(index_path)  # free: the index lives in the file, so write it here
    try:
        cur = store.cursor()
        catch_up(cur, index_path.parent, rebuild=rebuild)
        return search(cur, q)
    finally:
        store.close()


def serve_request(store: Store, req: dict[str, Any]) -> pa.Table:
    """The read socket's "search" operation (store/reader.QueryServer `ops`): the request
    gives only the words and filters; what runs is fixed here."""
    return serve_search(store, query_from_json(req.get("query")),
                        rebuild=bool(req.get("rebuild")))
