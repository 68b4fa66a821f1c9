"""Bulk loading: rows → polars DataFrame with an explicit schema → one INSERT … SELECT.

Every write path that handles more than one row goes through here. A per-row loop of
INSERTs costs 1–2 ms a row in DuckDB; one INSERT … SELECT from a frame costs microseconds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import duckdb
import polars as pl

from store.db import map_errors
from store.ids import new_id
from store.records import MAX_URL_LEN, RecordError

TS: Final = pl.Datetime("us", "UTC")

# Explicit schemas of the columns each loader writes (the rest take their defaults).
SCHEMAS: Final[dict[str, dict[str, pl.DataType]]] = {
    "snapshot": {
        "id": pl.Utf8(), "crawl_id": pl.Utf8(), "url": pl.Utf8(), "output_dir": pl.Utf8(),
        "depth": pl.Int32(), "parent_id": pl.Utf8(), "title": pl.Utf8(),
        "bookmarked_at": TS, "status": pl.Utf8(), "config": pl.Utf8(),
    },
    "archiveresult": {
        "id": pl.Utf8(), "snapshot_id": pl.Utf8(), "plugin": pl.Utf8(), "hook_name": pl.Utf8(),
        "status": pl.Utf8(), "output_dir": pl.Utf8(), "is_background": pl.Boolean(),
        "output_str": pl.Utf8(), "error": pl.Utf8(),
    },
    "output_file": {
        "archiveresult_id": pl.Utf8(), "path": pl.Utf8(), "size": pl.Int64(),
        "mimetype": pl.Utf8(),
    },
    "tag": {"name": pl.Utf8()},
    "snapshot_tag": {"snapshot_id": pl.Utf8(), "tag": pl.Utf8()},
    "process": {
        "id": pl.Utf8(), "owner_type": pl.Utf8(), "owner_id": pl.Utf8(), "machine_id": pl.Utf8(),
        "hook_name": pl.Utf8(), "pid": pl.Int32(), "cmd": pl.Utf8(), "cwd": pl.Utf8(),
        "started_at": TS, "ended_at": TS, "exit_code": pl.Int32(),
    },
    "record_error": {
        "owner_id": pl.Utf8(), "hook_name": pl.Utf8(), "line": pl.Utf8(), "error": pl.Utf8(),
    },
    "machine_binary": {
        "id": pl.Utf8(), "machine_id": pl.Utf8(), "name": pl.Utf8(), "status": pl.Utf8(),
        "output_dir": pl.Utf8(), "bin_providers": pl.Utf8(), "overrides": pl.Utf8(),
    },
}

# Values for NOT NULL columns that a batch may leave null.
DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "snapshot": {"config": "{}", "status": "queued", "depth": 0},
    "archiveresult": {"status": "queued", "is_background": False},
    "machine_binary": {"status": "queued", "overrides": "{}", "bin_providers": "env"},
}

# The unique key each table de-duplicates a batch on before inserting.
KEYS: Final[dict[str, tuple[str, ...]]] = {
    "snapshot": ("crawl_id", "url"),
    "archiveresult": ("snapshot_id", "hook_name"),
    "tag": ("name",),
    "snapshot_tag": ("snapshot_id", "tag"),
    "machine_binary": ("machine_id", "name"),
    "process": ("id",),
}

_counter = itertools.count()


def frame(table: str, rows: Sequence[Mapping[str, Any]] | pl.DataFrame) -> pl.DataFrame:
    """Rows as a DataFrame with the table's explicit schema (missing columns null)."""
    schema = SCHEMAS[table]
    if isinstance(rows, pl.DataFrame):
        df = rows
    else:
        df = pl.DataFrame(
            [{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row"
        ) if rows else pl.DataFrame(schema=schema)
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in df.columns]
    df = df.with_columns(missing).select([pl.col(c).cast(t) for c, t in schema.items()])
    fills = DEFAULTS.get(table, {})
    return df.with_columns([pl.col(c).fill_null(v) for c, v in fills.items()]) if fills else df


def insert_frame(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    df: pl.DataFrame,
    *,
    on_conflict: Literal["nothing", "error"] = "nothing",
) -> list[str]:
    """One INSERT … SELECT of the frame into `table`; returns the key of each inserted row.

    The batch is de-duplicated on the table's unique key first (DuckDB keeps only the first
    of two same-key rows in one statement, silently). With on_conflict="nothing", rows whose
    key already exists are skipped and not returned.
    """
    if df.is_empty():
        return []
    key = KEYS.get(table)
    if key:
        df = df.unique(subset=list(key), keep="first", maintain_order=True)
    # Columns null in every row are left out so that the table's defaults apply.
    df = df.select([c for c in df.columns if df[c].null_count() < df.height])
    cols = ", ".join(df.columns)
    view = f"_af_batch_{next(_counter)}"
    conflict = " ON CONFLICT DO NOTHING" if on_conflict == "nothing" else ""
    ret_col = "id" if "id" in df.columns else (key[0] if key else df.columns[0])
    with map_errors():
        cur.register(view, df.to_arrow())
        try:
            res = cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {view}{conflict} "
                f"RETURNING {ret_col}"
            )
            return [r[0] for r in res.fetchall()]
        finally:
            cur.unregister(view)


# --- snapshots -------------------------------------------------------------------------

_DOMAIN_RE: Final = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/@?#]*@)?(\[[^\]]+\]|[^/:?#]+)"


def snapshot_dir_expr(username: str, day: str) -> pl.Expr:
    """users/{user}/snapshots/{YYYYMMDD}/{domain}/{id} as a polars expression."""
    domain = (
        pl.col("url").str.extract(_DOMAIN_RE, 1).str.to_lowercase()
        .str.replace_all(r"[^a-z0-9.\-_]", "_").fill_null("_")
    )
    return pl.concat_str(
        [pl.lit(f"users/{username}/snapshots/{day}/"), domain, pl.lit("/"), pl.col("id")]
    )


def new_snapshot_frame(rows: pl.DataFrame, *, crawl_id: str, username: str) -> pl.DataFrame:
    """Complete a frame of discovered URLs (url, depth, title, …) into snapshot rows."""
    day = datetime.now(UTC).strftime("%Y%m%d")
    n = rows.height
    df = rows.with_columns(
        pl.Series("id", [new_id() for _ in range(n)], dtype=pl.Utf8),
        pl.lit(crawl_id).alias("crawl_id"),
        pl.lit("queued").alias("status"),
    )
    df = df.with_columns(snapshot_dir_expr(username, day).alias("output_dir"))
    return frame("snapshot", df)


@dataclass
class LoadReport:
    """What one bulk load did: rows inserted per table and the records it refused."""

    inserted: dict[str, int] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)


def load_snapshot_jsonl(
    cur: duckdb.DuckDBPyConnection,
    lines: Iterable[str],
    *,
    crawl_id: str,
    username: str = "default",
    default_depth: int = 0,
) -> LoadReport:
    """Bulk-load Snapshot JSONL records (e.g. an importer's output) in one statement.

    Validation is vectorised with the same rules as store.records.SnapshotRecord: a line
    that is not a JSON object, not of type Snapshot, without a url, with an over-long url or
    a negative depth is returned as an error with its reason; the valid ones still load.
    """
    report = LoadReport()
    texts = [ln.strip() for ln in lines if ln.strip()]
    parsed: list[dict[str, Any]] = []
    for ln in texts:
        try:
            obj = json.loads(ln)
        except ValueError:
            report.errors.append(RecordError(ln[:500], "not a JSON object"))
            continue
        if not isinstance(obj, dict):
            report.errors.append(RecordError(ln[:500], "not a JSON object"))
            continue
        parsed.append(obj)
    if not parsed:
        return report
    raw = pl.DataFrame(
        {
            "type": [o.get("type") for o in parsed],
            "url": [o.get("url") if isinstance(o.get("url"), str) else None for o in parsed],
            "depth": [o.get("depth") if isinstance(o.get("depth"), int) else None
                      for o in parsed],
            "title": [o.get("title") if isinstance(o.get("title"), str) else None
                      for o in parsed],
            "line": [json.dumps(o)[:500] for o in parsed],
        },
        schema={"type": pl.Utf8, "url": pl.Utf8, "depth": pl.Int64, "title": pl.Utf8,
                "line": pl.Utf8},
    ).with_columns(pl.col("url").str.strip_chars())
    reason = (
        pl.when(pl.col("type") != "Snapshot").then(pl.lit("not a Snapshot record"))
        .when(pl.col("url").is_null() | (pl.col("url") == "")).then(pl.lit("url missing"))
        .when(pl.col("url").str.len_chars() > MAX_URL_LEN).then(pl.lit("url too long"))
        .when(pl.col("depth") < 0).then(pl.lit("depth must be >= 0"))
        .otherwise(None)
        .alias("reason")
    )
    checked = raw.with_columns(reason)
    bad = checked.filter(pl.col("reason").is_not_null())
    report.errors.extend(
        RecordError(line, r) for line, r in bad.select("line", "reason").iter_rows()
    )
    good = checked.filter(pl.col("reason").is_null()).select(
        "url", pl.col("depth").fill_null(default_depth).cast(pl.Int32), "title"
    )
    df = new_snapshot_frame(good, crawl_id=crawl_id, username=username)
    report.inserted["snapshot"] = len(insert_frame(cur, "snapshot", df))
    return report


def utcnow() -> datetime:
    """Timezone-aware now, for timestamps written from Python."""
    return datetime.now(UTC)
