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

from archiveflow.store.db import is_shared, map_errors
from archiveflow.store.records import MAX_URL_LEN, RecordError

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


def scan(cur: Any, df: pl.DataFrame) -> Any:
    """`df` as DuckDB should read it by name (a replacement scan or `register`).

    On the local index: a one-shot Arrow C stream (polars' PyCapsule), which DuckDB reads
    without importing pyarrow; a polars frame or pyarrow Table made DuckDB import pyarrow
    and pyarrow.dataset, ≈75 MB of the crawl process's RSS (bench/README.md, #18). It can be
    read once only: a statement that needs its rows twice reads them through a
    `WITH … AS MATERIALIZED` CTE. On the shared index a pyarrow Table: its cursor (store/
    lake.py) reads a frame more than once (RETURNING emulated, statements retried)."""
    return df.to_arrow() if is_shared(cur) else df.__arrow_c_stream__()


def fetch_frame(cur: Any, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    """The rows of one query as a polars frame (what `.pl()` gives), on the local index
    read through DuckDB's Arrow C stream: `.pl()` imports pyarrow (see scan())."""
    if is_shared(cur):
        return (cur.execute(sql, params) if params is not None else cur.execute(sql)).pl()
    return pl.DataFrame(cur.sql(sql, params=params))


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
    # An anti-join rather than ON CONFLICT DO NOTHING: with duckdb 1.5.5 the latter took
    # 15 s for 20k rows into a populated table with two unique keys; the anti-join ≈ 0.3 s.
    # The existing keys are looked up only where every key column matches one of the
    # batch's, so the cost follows the batch, not the table (a whole-table anti-join cost
    # 29 ms per snapshot at 5k results and 220 ms at 500k; on the first key column alone,
    # a crawl's 100k snapshots were all read for each batch of its discovered URLs).
    # The batch is read once (scan()'s stream), into a materialized CTE the anti-join reads.
    skip = ""
    if on_conflict == "nothing" and key:
        where = " AND ".join(f"{k} IN (SELECT {k} FROM _b)" for k in key)
        skip = (f" ANTI JOIN (SELECT {', '.join(key)} FROM {table} WHERE {where}) _e "
                f"USING ({', '.join(key)})")
    ret_col = "id" if "id" in df.columns else (key[0] if key else df.columns[0])
    with map_errors():
        cur.register(view, scan(cur, df))
        try:
            res = cur.execute(
                f"INSERT INTO {table} ({cols}) WITH _b AS MATERIALIZED (SELECT * FROM {view}) "
                f"SELECT {cols} FROM _b{skip} RETURNING {ret_col}"
            )
            return [r[0] for r in res.fetchall()]
        finally:
            cur.unregister(view)


# --- snapshots -------------------------------------------------------------------------

_DOMAIN_RE: Final = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/@?#]*@)?(\[[^\]]+\]|[^/:?#]+)"


def domain_expr(col: str = "url") -> pl.Expr:
    """The URL's host, lower-cased and made safe as a folder name ("_" when none)."""
    return (
        pl.col(col).str.extract(_DOMAIN_RE, 1).str.to_lowercase()
        .str.replace_all(r"[^a-z0-9.\-_]", "_").fill_null("_")
    )


def _domains(df: pl.DataFrame) -> pl.Series:
    """domain_expr() of each row's url, with the regex run once per distinct URL head.

    The regex reads a URL only up to the first '/', '?' or '#' after its "://" (unless the
    URL holds a '[': an "[…]" host may span them), so every URL cut there has the same
    domain, and a batch's URLs share few heads. 100k URLs, CPU: 65 ms → ≈25 ms (the
    capturing regex costs ≈0.6 µs a URL; the finds and slices below ≈0.15 µs).
    """
    url = pl.col("url")
    start = url.str.find("://", literal=True) + 3
    # Computed once (inside when/then it was evaluated twice: 32 → 15 ms). str.find counts
    # bytes and str.slice characters: with non-ASCII text the cut falls further right,
    # which still keeps the whole head (the head is only shared less).
    cut = df.select(
        end=start + url.str.slice(start).str.find(r"[/?#]"),
        whole=url.str.contains("[", literal=True),
    )
    heads = df.select(
        pl.when(cut["whole"] | cut["end"].is_null()).then(url)
        .otherwise(url.str.slice(0, cut["end"]))
        .alias("_head")
    )
    domains = heads.unique().select("_head", domain_expr("_head").alias("_domain"))
    # A null url has a null head, which the join does not match: domain_expr gives "_".
    return (
        heads.join(domains, on="_head", how="left", maintain_order="left")["_domain"]
        .fill_null("_")
    )


def _insert_snapshot_rows(
    cur: duckdb.DuckDBPyConnection,
    rows: pl.DataFrame,
    *,
    crawl_id: str,
    username: str,
    returning: bool,
) -> list[tuple[Any, ...]]:
    """The one INSERT … SELECT behind insert_snapshots and load_snapshot_jsonl.

    returning=True gives the (id, url) of each Snapshot created; False gives [(count,)]:
    shipping 100k (id, url) pairs back to Python cost ≈70–100 ms of a bulk load.
    """
    if rows.is_empty():
        return [] if returning else [(0,)]
    day = datetime.now(UTC).strftime("%Y%m%d")
    df = frame("snapshot", rows).drop("id", "crawl_id", "output_dir", "status")
    # First row of each url only (same as unique(keep="first", maintain_order=True), 18 →
    # 12 ms at 100k); URLs already in the crawl are skipped by the anti-join below.
    df = df.filter(pl.col("url").is_first_distinct())
    df = df.with_columns(_domains(df).alias("_domain"))
    prefix = f"users/{username}/snapshots/{day}/"
    # Read by its Python name (a DuckDB replacement scan): register + unregister of a view
    # cost ≈4 ms at 100k rows. Read once, into the materialized CTE (see scan()).
    _af_snapshots = scan(cur, df)  # noqa: F841 - read by name below
    # crawl_id is a parameter, not a column of 100k copies in the frame. Only the crawl's
    # rows with one of the batch's URLs are read back for the anti-join: with all of the
    # crawl's URLs it read 100k rows for each recorder batch of a big crawl's links.
    sql = """
        INSERT INTO snapshot (id, crawl_id, url, output_dir, depth, parent_id, title,
                              bookmarked_at, config)
        WITH _b AS MATERIALIZED (SELECT * FROM _af_snapshots)
        SELECT id, ?, url, ? || _domain || '/' || id, depth, parent_id, title,
               bookmarked_at, config
        FROM (SELECT uuidv7()::VARCHAR AS id, * FROM _b
              ANTI JOIN (SELECT url FROM snapshot WHERE crawl_id = ?
                         AND url IN (SELECT url FROM _b)) _e USING (url))
        """
    with map_errors():
        res = cur.execute(sql + ("RETURNING id, url" if returning else ""),
                          [crawl_id, prefix, crawl_id])
        return res.fetchall()


def insert_snapshots(
    cur: duckdb.DuckDBPyConnection,
    rows: pl.DataFrame,
    *,
    crawl_id: str,
    username: str,
) -> list[tuple[str, str]]:
    """Insert discovered URLs (url, depth, title, parent_id, bookmarked_at) as queued Snapshots.

    Ids (UUIDv7) and output folders (users/{user}/snapshots/{YYYYMMDD}/{domain}/{id}) are
    made inside the one INSERT … SELECT. URLs already in the crawl are skipped (an
    anti-join; see insert_frame for why not ON CONFLICT). Returns
    (id, url) of each Snapshot created.
    """
    created = _insert_snapshot_rows(cur, rows, crawl_id=crawl_id, username=username,
                                    returning=True)
    return [(r[0], r[1]) for r in created]


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
    texts = pl.Series("line", [ln.strip() for ln in lines], dtype=pl.Utf8)
    texts = texts.filter(texts.str.len_bytes() > 0)
    is_obj = texts.str.starts_with("{")
    report.errors.extend(
        RecordError(ln[:500], "not a JSON object") for ln in texts.filter(~is_obj)
    )
    raw = _decode_snapshot_lines(texts.filter(is_obj), report)
    if raw.is_empty():
        return report
    reason = (
        pl.when(pl.col("type") != "Snapshot").then(pl.lit("not a Snapshot record"))
        .when(pl.col("url").is_null() | (pl.col("url") == "")).then(pl.lit("url missing"))
        .when(pl.col("url").str.len_chars() > MAX_URL_LEN).then(pl.lit("url too long"))
        .when(pl.col("depth") < 0).then(pl.lit("depth must be >= 0"))
        .otherwise(None)
        .alias("reason")
    )
    checked = raw.with_columns(pl.col("url").str.strip_chars()).with_columns(reason)
    bad = checked.filter(pl.col("reason").is_not_null())
    report.errors.extend(
        RecordError(line, r) for line, r in bad.select("line", "reason").iter_rows()
    )
    good = checked.filter(pl.col("reason").is_null()).select(
        "url", pl.col("depth").fill_null(default_depth).cast(pl.Int32), "title"
    )
    # Only the count is needed here: no RETURNING of 100k (id, url) pairs.
    ((count,),) = _insert_snapshot_rows(cur, good, crawl_id=crawl_id, username=username,
                                        returning=False)
    report.inserted["snapshot"] = int(count)
    return report


_SNAPSHOT_LINE: Final = pl.Struct(
    {"type": pl.Utf8, "url": pl.Utf8, "depth": pl.Int64, "title": pl.Utf8}
)


def _decode_snapshot_lines(lines: pl.Series, report: LoadReport) -> pl.DataFrame:
    """Decode JSON lines in one vectorised pass; fall back to line-by-line on bad input."""
    try:
        decoded = lines.str.json_decode(dtype=_SNAPSHOT_LINE).struct.unnest()
        return decoded.with_columns(lines.str.slice(0, 500).alias("line"))
    except pl.exceptions.PolarsError:
        pass
    rows: list[dict[str, Any]] = []
    for ln in lines:
        try:
            obj = json.loads(ln)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            report.errors.append(RecordError(ln[:500], "not a JSON object"))
            continue
        rows.append({
            "type": obj.get("type"),
            "url": obj.get("url") if isinstance(obj.get("url"), str) else None,
            "depth": obj.get("depth") if isinstance(obj.get("depth"), int) else None,
            "title": obj.get("title") if isinstance(obj.get("title"), str) else None,
            "line": ln[:500],
        })
    return pl.DataFrame(rows, schema={**dict(_SNAPSHOT_LINE.to_schema()), "line": pl.Utf8})
