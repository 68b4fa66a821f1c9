"""Snapshot rows: claim ready ones, seal, count, tag."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import duckdb
import polars as pl
from archiveflow.store.load import frame, insert_frame
from archiveflow.store.transitions import claim_next, move


def claim_snapshots(
    cur: duckdb.DuckDBPyConnection, crawl_id: str, *, limit: int, lease: float
) -> list[dict[str, Any]]:
    """Claim up to `limit` ready snapshots of a crawl, shallowest first."""
    return claim_next(
        cur, "snapshot", "crawl_id = ?", [crawl_id], limit=limit, lease=lease,
        order_by="depth, created_at",
    )


def tags_of(cur: duckdb.DuckDBPyConnection, snapshot_ids: list[str]) -> dict[str, list[str]]:
    """Each snapshot's tags, sorted, for a batch of snapshots in one query."""
    out: dict[str, list[str]] = {i: [] for i in snapshot_ids}
    if snapshot_ids:
        for sid, tag in cur.execute(
            "SELECT snapshot_id, tag FROM snapshot_tag WHERE snapshot_id IN "
            "(SELECT unnest(?::VARCHAR[])) ORDER BY tag", [snapshot_ids]
        ).fetchall():
            out[sid].append(tag)
    return out


def seal_snapshots(cur: duckdb.DuckDBPyConnection, ids: str | list[str]) -> list[dict[str, Any]]:
    """started → sealed for one id (strict) or many."""
    return move(cur, "snapshot", "seal", ids)


def renew_leases(cur: duckdb.DuckDBPyConnection, table: str, ids: list[str], lease: float) -> None:
    """Push the lease of rows this worker still holds (status stays started)."""
    if table not in ("crawl", "snapshot", "archiveresult", "machine_binary"):
        raise ValueError(f"no lease on {table}")
    if ids:
        cur.execute(
            f"UPDATE {table} SET retry_at = now() + to_seconds(?::DOUBLE) "
            "WHERE id IN (SELECT unnest(?::VARCHAR[])) AND status = 'started'",
            [float(lease), ids],
        )


def counts(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> dict[str, int]:
    """Snapshots of a crawl by status."""
    rows = cur.execute(
        "SELECT status, count(*) FROM snapshot WHERE crawl_id = ? GROUP BY status", [crawl_id]
    ).fetchall()
    return {s: int(n) for s, n in rows}


def is_crawl_done(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> bool:
    """True when no snapshot of the crawl is queued or started."""
    row = cur.execute(
        "SELECT count(*) FROM snapshot WHERE crawl_id = ? AND status IN ('queued', 'started')",
        [crawl_id],
    ).fetchone()
    return row is not None and row[0] == 0


def add_tags(cur: duckdb.DuckDBPyConnection, pairs: Iterable[tuple[str, str]]) -> int:
    """Attach (snapshot_id, tag) pairs in bulk; creates missing tags. Returns links added."""
    df = frame("snapshot_tag", pl.DataFrame(
        list(pairs), schema={"snapshot_id": pl.Utf8, "tag": pl.Utf8}, orient="row"))
    df = df.filter(pl.col("tag").str.len_chars() > 0)
    if df.is_empty():
        return 0
    insert_frame(cur, "tag", df.select(pl.col("tag").alias("name")))
    return len(insert_frame(cur, "snapshot_tag", df))
