"""Full-text search over the readable text of every Snapshot (DuckDB's fts extension).

- The extension comes from the `duckdb-extension-fts` wheel and is loaded from the file
  inside it (`LOAD '<path>'`); nothing is ever downloaded (`INSTALL` is never used), so
  search works on air-gapped machines.
- `snapshot_text` holds one row per sealed Snapshot: id, url, title, domain, its capture
  time and the text `htmltotext` saved. `index_snapshots()` keeps it in step; the pipeline
  calls it after it seals a batch of snapshots. It is cheap (it reads
  small text files and writes two set-based statements) and marks the FTS index stale.
  Any sealed snapshot still missing from it is added by the next search, so a failure or a
  missed call here only delays its text until then.
- The FTS index itself (`PRAGMA create_fts_index`) cannot be updated in place: it is a full
  rebuild, linear in the corpus. Rebuilding it per sealed batch would make a crawl of N
  snapshots cost O(N²); so it is rebuilt lazily, by the first search that finds it stale
  (`fts_state.dirty`). See docs/sql.md for the measured costs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb
import polars as pl
from archiveflow.store.errors import StoreError

if TYPE_CHECKING:
    import pyarrow as pa
    from archiveflow.store.db import Store

TEXT_CAP: Final[int] = 1_000_000  # characters of a page's text that are indexed
TEXT_FILE: Final[str] = "htmltotext/htmltotext.txt"
FTS_SCHEMA: Final[str] = "fts_main_snapshot_text"
SNIPPET_CHARS: Final[int] = 160
_WORD = re.compile(r"\w+", re.UNICODE)

DDL: Final[str] = """
CREATE TABLE IF NOT EXISTS snapshot_text (
    snapshot_id VARCHAR PRIMARY KEY,
    url         VARCHAR NOT NULL,
    title       VARCHAR,
    domain      VARCHAR,
    captured_at TIMESTAMPTZ,
    text        VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS fts_state (
    id        INTEGER PRIMARY KEY,
    dirty     BOOLEAN NOT NULL,
    built_at  TIMESTAMPTZ,
    docs      BIGINT
);
INSERT INTO fts_state (id, dirty) SELECT 1, true WHERE NOT EXISTS (SELECT 1 FROM fts_state);
"""

_SCHEMA: Final[dict[str, Any]] = {
    "snapshot_id": pl.Utf8, "url": pl.Utf8, "title": pl.Utf8, "domain": pl.Utf8,
    "captured_at": pl.Datetime("us", "UTC"), "text": pl.Utf8,
}


class SearchError(StoreError):
    """Search is not possible (no extension file, no index yet); the message says why."""


@cache
def fts_extension_path() -> Path:
    """The `fts.duckdb_extension` file shipped in the duckdb-extension-fts wheel."""
    try:
        import duckdb_extension_fts  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise SearchError(
            f"full-text search needs the duckdb-extension-fts wheel: pip install "
            f"duckdb-extension-fts=={duckdb.__version__}") from e
    root = Path(duckdb_extension_fts.__file__).parent
    found = sorted(root.rglob("*.duckdb_extension"))
    exact = [p for p in found if f"v{duckdb.__version__}" in p.parts]
    if not (exact or found):
        raise SearchError(f"no .duckdb_extension file inside {root}")
    return (exact or found)[0]


def load_sql() -> str:
    """The statement that loads the fts extension from the wheel (no download)."""
    return f"LOAD '{str(fts_extension_path()).replace(chr(39), chr(39) * 2)}'"


def load_fts(cur: duckdb.DuckDBPyConnection) -> None:
    """Load the fts extension into this connection's database."""
    cur.execute(load_sql())


def ensure_tables(cur: duckdb.DuckDBPyConnection) -> None:
    """Create snapshot_text and fts_state if missing (idempotent)."""
    cur.execute(DDL)


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


def index_snapshots(cur: duckdb.DuckDBPyConnection, data_dir: Path,
                    snapshot_ids: Sequence[str], *, ensure: bool = True) -> int:
    """Put the text of these snapshots into snapshot_text (replacing earlier rows) and mark
    the FTS index stale. Runs inside the caller's transaction; returns rows written.
    `ensure=False`: the caller already made the tables (DDL in every batch costs ms)."""
    if not snapshot_ids:
        return 0
    if ensure:
        ensure_tables(cur)
    res = cur.execute(
        "SELECT id, url, title, output_dir, created_at FROM snapshot "
        "WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(snapshot_ids)])
    cols = [d[0] for d in res.description or []]
    snaps = [dict(zip(cols, r, strict=True)) for r in res.fetchall()]
    return write_text_rows(cur, text_rows(Path(data_dir), snaps), ensure=False)


def write_text_rows(cur: duckdb.DuckDBPyConnection, df: pl.DataFrame, *,
                    ensure: bool = True) -> int:
    """Replace snapshot_text rows with these (one DELETE, one INSERT) and mark it stale."""
    if df.is_empty():
        return 0
    if ensure:
        ensure_tables(cur)
    _af_text = df.to_arrow()  # noqa: F841 - read by name below (a replacement scan, no view)
    cur.execute("DELETE FROM snapshot_text WHERE snapshot_id IN "
                "(SELECT unnest(?::VARCHAR[]))", [df["snapshot_id"].to_list()])
    cur.execute("INSERT INTO snapshot_text SELECT snapshot_id, url, title, url_domain(url), "
                "captured_at, text FROM _af_text")
    cur.execute("UPDATE fts_state SET dirty = true WHERE id = 1")
    return df.height


def rebuild_text(cur: duckdb.DuckDBPyConnection, data_dir: Path) -> int:
    """Refill snapshot_text from every sealed snapshot's files (e.g. after reindex)."""
    ensure_tables(cur)
    res = cur.execute("SELECT id, url, title, output_dir, created_at FROM snapshot "
                      "WHERE status = 'sealed'")
    cols = [d[0] for d in res.description or []]
    snaps = [dict(zip(cols, r, strict=True)) for r in res.fetchall()]
    cur.execute("DELETE FROM snapshot_text")
    return write_text_rows(cur, text_rows(Path(data_dir), snaps))


def rebuild_sql() -> str:
    """Statements that rebuild the FTS index and mark it fresh (fts must be loaded)."""
    return (
        "PRAGMA create_fts_index('snapshot_text', 'snapshot_id', 'title', 'text', "
        "overwrite = 1); "
        "UPDATE fts_state SET dirty = false, built_at = now(), "
        "docs = (SELECT count(*) FROM snapshot_text) WHERE id = 1"
    )


def rebuild_fts(cur: duckdb.DuckDBPyConnection) -> None:
    """Rebuild the FTS index over snapshot_text now."""
    load_fts(cur)
    ensure_tables(cur)
    for stmt in cur.extract_statements(rebuild_sql()):
        cur.execute(stmt)


def is_dirty(cur: duckdb.DuckDBPyConnection) -> bool:
    """True when snapshot_text changed since the FTS index was built (or it has none)."""
    has = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'fts_state'").fetchone()
    if not has or not has[0]:
        return True
    row = cur.execute("SELECT dirty FROM fts_state WHERE id = 1").fetchone()
    schema = cur.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ?",
                         [FTS_SCHEMA]).fetchone()
    return bool(row is None or row[0] or not schema or not schema[0])


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


def search_sql() -> str:
    """The ranked search statement; parameters in order of `search_params()`."""
    return f"""
        SELECT t.snapshot_id, t.url, t.title, t.domain, t.captured_at,
               round(s.score, 4) AS score, t.text,
               (SELECT coalesce(string_agg(g.tag, ',' ORDER BY g.tag), '')
                FROM snapshot_tag g WHERE g.snapshot_id = t.snapshot_id) AS tags
        FROM (SELECT snapshot_id, {FTS_SCHEMA}.match_bm25(snapshot_id, $q) AS score
              FROM snapshot_text) s
        JOIN snapshot_text t USING (snapshot_id)
        WHERE s.score IS NOT NULL
          AND ($phrase IS NULL OR strpos(lower(t.title || ' ' || t.text), lower($phrase)) > 0)
          AND ($domain IS NULL OR t.domain = lower($domain)
               OR t.domain LIKE '%.' || lower($domain))
          AND ($tag IS NULL OR EXISTS (SELECT 1 FROM snapshot_tag g
                                      WHERE g.snapshot_id = t.snapshot_id AND g.tag = $tag))
          AND ($since IS NULL OR t.captured_at >= $since::TIMESTAMPTZ)
        ORDER BY s.score DESC, t.captured_at DESC
        LIMIT $limit
    """


def search_params(q: SearchQuery) -> dict[str, Any]:
    """Named parameters of search_sql() for a query."""
    return {"q": q.terms, "phrase": q.phrase, "domain": q.domain, "tag": q.tag,
            "since": q.since.isoformat() if q.since else None, "limit": int(q.limit)}


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
    """Run a ranked search on a connection that has fts loaded and a fresh index."""
    res = cur.execute(search_sql(), search_params(q))
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


# Whether search can run as is: (text table exists, FTS index exists, index stale,
# sealed snapshots whose text is not indexed yet).
_STATE_SQL: Final[str] = f"""
    SELECT
      (SELECT count(*) FROM duckdb_tables()
       WHERE schema_name = 'main' AND table_name = 'snapshot_text') > 0,
      (SELECT count(*) FROM duckdb_schemas() WHERE schema_name = '{FTS_SCHEMA}') > 0
"""
_STALE_SQL: Final[str] = """
    SELECT coalesce((SELECT dirty FROM fts_state WHERE id = 1), true),
           (SELECT count(*) FROM snapshot s WHERE s.status = 'sealed'
            AND NOT EXISTS (SELECT 1 FROM snapshot_text t WHERE t.snapshot_id = s.id))
"""
_MISSING_SQL: Final[str] = """
    SELECT s.id, s.output_dir FROM snapshot s WHERE s.status = 'sealed'
    AND NOT EXISTS (SELECT 1 FROM snapshot_text t WHERE t.snapshot_id = s.id)
"""
_CATCH_UP_SQL: Final[str] = """
    UPDATE fts_state SET dirty = true WHERE id = 1;
    INSERT INTO snapshot_text (snapshot_id, url, title, domain, captured_at, text)
    SELECT s.id, s.url, s.title, url_domain(s.url), s.created_at, x.text
    FROM (SELECT unnest(?::VARCHAR[]) AS id, unnest(?::VARCHAR[]) AS text) x
    JOIN snapshot s ON s.id = x.id
    WHERE NOT EXISTS (SELECT 1 FROM snapshot_text t WHERE t.snapshot_id = s.id)
"""
CATCH_UP_BATCH: Final[int] = 500

Run = Callable[[str, Any], tuple[list[str], list[tuple[Any, ...]]]]


def _cursor_runner(cur: duckdb.DuckDBPyConnection) -> Run:
    def run(sql: str, params: Any = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        statements = cur.extract_statements(sql)
        for st in statements[:-1]:
            cur.execute(st)
        res = cur.execute(statements[-1], params) if params else cur.execute(statements[-1])
        if res.description is None:
            return [], []
        return [d[0] for d in res.description], res.fetchall()
    return run


def _prepare(run: Run, data_dir: Path, rebuild: bool) -> None:
    """Create the tables, index the text of sealed snapshots not indexed yet, rebuild the
    FTS index when stale. Works on any connection that may write."""
    run(DDL, None)
    if rebuild:
        run("DELETE FROM snapshot_text; UPDATE fts_state SET dirty = true WHERE id = 1", None)
    _, missing = run(_MISSING_SQL, None)
    for i in range(0, len(missing), CATCH_UP_BATCH):
        chunk = missing[i:i + CATCH_UP_BATCH]
        run(_CATCH_UP_SQL, [[sid for sid, _ in chunk],
                            [_read_text(data_dir / out) for _, out in chunk]])
    _, rows = run(_STALE_SQL, None)
    _, state = run(_STATE_SQL, None)
    if rows[0][0] or not state[0][1]:
        # LOAD on its own: the PRAGMA cannot even be parsed before the extension is loaded.
        run(load_sql(), None)
        run(rebuild_sql(), None)


def _search_with(run: Run, q: SearchQuery, *, load: bool = True) -> list[dict[str, Any]]:
    if load:
        run(load_sql(), None)
    cols, rows = run(search_sql(), search_params(q))
    return rows_with_snippets(cols, rows, q)


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
    """The writer's side of a search asked through the read socket: catch up and rebuild
    the text index with this process's own statements, then the ranked search's rows
    (an Arrow table; the client cuts the snippets)."""
    import pyarrow as pa
    from archiveflow.store.db import map_errors, retry_conflicts

    cur = store.cursor()
    run = _cursor_runner(cur)

    def prepare() -> None:
        # The crawl marks the text stale as it seals snapshots: a conflict is retried.
        with map_errors(store.path):
            _prepare(run, Path(store.path).parent, rebuild)

    retry_conflicts(prepare)
    run(load_sql(), None)
    res = cur.execute(search_sql(), search_params(q))
    return res.to_arrow_table() if res.description else pa.table({})


def run_search(index_path: Path, q: SearchQuery, *, rebuild: bool = False
               ) -> list[dict[str, Any]]:
    """Search the index at `index_path`, whoever holds it.

    First the text of sealed snapshots not indexed yet is added (read from their folders)
    and a stale FTS index rebuilt; then the ranked search. When no process writes the
    index, a read-only connection is enough unless that work is needed (then it opens the
    index read-write, briefly). When a crawl holds it, the crawl does that work and the
    search (`serve_search`), asked through the read socket.
    `rebuild` re-reads every snapshot's text first.
    """
    from archiveflow.store.db import Store
    from archiveflow.store.reader import Reader
    from archiveflow.store.readonly import read_only_connection

    data_dir = index_path.parent
    with Reader(index_path) as reader:
        if reader.via_writer:
            table = reader.search_table(query_to_json(q), rebuild=rebuild)
            cols = table.column_names
            rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
            return rows_with_snippets(cols, rows, q)
    if not rebuild:
        # The fts extension is loaded before the connection is locked down (no file access).
        with read_only_connection(index_path, preload=[load_sql()]) as con:
            has_text, has_fts = con.execute(_STATE_SQL).fetchone() or (False, False)
            if has_text and has_fts:
                dirty, missing = con.execute(_STALE_SQL).fetchone() or (True, 1)
                if not dirty and not missing:
                    return _search_with(_cursor_runner(con), q, load=False)
    store = Store(index_path)  # free: the FTS index lives in the file, so write it here
    try:
        run = _cursor_runner(store.cursor())
        _prepare(run, data_dir, rebuild)
        return _search_with(run, q)
    finally:
        store.close()
