"""The store side of `archiveflow reindex`: bulk-load rebuilt rows, swap index files.

tasks/reindex.py reads the archive folder (crawl.json, snapshot.json, hook folders) and
hands rows here. Rows keep their ids and timestamps, so they go in with explicit columns
(load.insert_frame leaves timestamps to their defaults). The new index is built beside the
old one and swapped in; the old file is moved aside, never deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import polars as pl

from archiveflow.store.db import Store, map_errors
from archiveflow.store.load import TS

CRAWL_COLUMNS: Final[dict[str, pl.DataType]] = {
    "id": pl.Utf8(), "status": pl.Utf8(), "created_at": TS, "modified_at": TS,
    "output_dir": pl.Utf8(), "username": pl.Utf8(), "label": pl.Utf8(), "seeds": pl.Utf8(),
    "parser": pl.Utf8(), "max_depth": pl.Int32(), "max_urls": pl.Int32(), "tags": pl.Utf8(),
    "plugins": pl.Utf8(), "url_allow": pl.Utf8(), "url_deny": pl.Utf8(), "config": pl.Utf8(),
    "schedule": pl.Utf8(), "flow_run_id": pl.Utf8(), "machine_id": pl.Utf8(),
}
SNAPSHOT_COLUMNS: Final[dict[str, pl.DataType]] = {
    "id": pl.Utf8(), "crawl_id": pl.Utf8(), "url": pl.Utf8(), "status": pl.Utf8(),
    "created_at": TS, "modified_at": TS, "output_dir": pl.Utf8(), "depth": pl.Int32(),
    "parent_id": pl.Utf8(), "title": pl.Utf8(), "bookmarked_at": TS, "config": pl.Utf8(),
}
RESULT_COLUMNS: Final[dict[str, pl.DataType]] = {
    "id": pl.Utf8(), "snapshot_id": pl.Utf8(), "plugin": pl.Utf8(), "hook_name": pl.Utf8(),
    "status": pl.Utf8(), "created_at": TS, "modified_at": TS, "output_dir": pl.Utf8(),
    "is_background": pl.Boolean(), "attempts": pl.Int32(), "start_ts": TS, "end_ts": TS,
    "exit_code": pl.Int32(), "output_str": pl.Utf8(), "output_json": pl.Utf8(),
    "error": pl.Utf8(), "output_size": pl.Int64(), "output_count": pl.Int32(),
}
FILE_COLUMNS: Final[dict[str, pl.DataType]] = {
    "archiveresult_id": pl.Utf8(), "path": pl.Utf8(), "size": pl.Int64(), "mimetype": pl.Utf8(),
}
TABLES: Final[dict[str, dict[str, pl.DataType]]] = {
    "crawl": CRAWL_COLUMNS, "snapshot": SNAPSHOT_COLUMNS, "archiveresult": RESULT_COLUMNS,
    "output_file": FILE_COLUMNS,
}
INDEX_FILES: Final[tuple[str, ...]] = ("", ".wal")  # a database and its write-ahead log


def insert_rows(cur: duckdb.DuckDBPyConnection, table: str,
                rows: Sequence[Mapping[str, Any]]) -> int:
    """One INSERT … SELECT of rows with every column given (ids, timestamps kept)."""
    if not rows:
        return 0
    schema = TABLES[table]
    df = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema,
                      orient="row")
    df = df.unique(subset=["id"] if "id" in schema else None, keep="first",
                   maintain_order=True)
    cols = ", ".join(schema)
    with map_errors():
        cur.register("_af_reindex", df.to_arrow())
        try:
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _af_reindex")
        finally:
            cur.unregister("_af_reindex")
    return df.height


def requeue_unfinished_crawls(cur: duckdb.DuckDBPyConnection) -> None:
    """Rebuilt crawls start sealed; one with a snapshot left to do goes back to queued."""
    cur.execute("""
        UPDATE crawl SET status = 'queued' WHERE id IN (
            SELECT crawl_id FROM snapshot WHERE status <> 'sealed')
    """)


def count_resumable_snapshots(cur: duckdb.DuckDBPyConnection) -> int:
    """Queued snapshots that had started (some hook ran): `resume` finishes them."""
    row = cur.execute("SELECT count(*) FROM snapshot WHERE status = 'queued' "
                      "AND id IN (SELECT DISTINCT snapshot_id FROM archiveresult)").fetchone()
    return int(row[0]) if row else 0


def checkpoint(cur: duckdb.DuckDBPyConnection) -> None:
    """Write everything into the database file, so the swap moves no write-ahead log."""
    with map_errors():
        cur.execute("CHECKPOINT")


def json_text(value: Any) -> str | None:
    """A JSON column's value as text (it may come from a file as a string or an object)."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _paths(base: Path) -> list[Path]:
    return [base.with_name(base.name + suffix) for suffix in INDEX_FILES]


def _remove(base: Path) -> None:
    for p in _paths(base):
        p.unlink(missing_ok=True)


def build_path(index_path: Path) -> Path:
    """Where the new index is built before the swap."""
    return index_path.with_name(index_path.name + ".rebuilding")


def open_new(index_path: Path) -> Store:
    """A fresh, empty Store beside `index_path` (a leftover half-built one is dropped)."""
    tmp = build_path(index_path)
    _remove(tmp)
    return Store(tmp)


def check_free(index_path: Path) -> None:
    """Raise IndexLocked if a process holds the index (a crawl is running)."""
    if index_path.exists():
        with map_errors(index_path):
            duckdb.connect(str(index_path)).close()


def swap_in(index_path: Path, now: datetime | None = None) -> Path | None:
    """Move the old index (and its .wal) aside, move the built one into place.

    Returns where the old index went (None when there was none). Nothing is deleted.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    kept: Path | None = None
    if index_path.exists():
        kept = index_path.with_name(f"{index_path.name}.{stamp}.bak")
        n = 1
        while kept.exists():
            kept = index_path.with_name(f"{index_path.name}.{stamp}-{n}.bak")
            n += 1
        for src, dst in zip(_paths(index_path), _paths(kept), strict=True):
            if src.exists():
                os.replace(src, dst)
    for src, dst in zip(_paths(build_path(index_path)), _paths(index_path), strict=True):
        if src.exists():
            os.replace(src, dst)
    return kept
