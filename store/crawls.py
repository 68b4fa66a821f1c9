"""Crawl rows: create, claim, seal, patch label and config, list unfinished."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from archiveflow.store.ids import new_id
from archiveflow.store.transitions import move


def create_crawl(
    cur: duckdb.DuckDBPyConnection,
    *,
    seeds: str,
    max_depth: int = 0,
    tags: str = "",
    plugins: str | None = None,
    url_allow: str | None = None,
    url_deny: str | None = None,
    max_urls: int | None = None,
    parser: str | None = None,
    label: str | None = None,
    username: str = "default",
    schedule: str | None = None,
    config: Mapping[str, Any] | None = None,
    machine_id: str | None = None,
) -> dict[str, Any]:
    """Insert one queued Crawl and return its row."""
    crawl_id = new_id()
    day = datetime.now(UTC).strftime("%Y%m%d")
    res = cur.execute(
        """
        INSERT INTO crawl (id, output_dir, username, label, seeds, parser, max_depth, max_urls,
                           tags, plugins, url_allow, url_deny, config, schedule, machine_id)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        RETURNING *
        """,
        [crawl_id, f"users/{username}/crawls/{day}/{crawl_id}", username, label, seeds, parser,
         max_depth, max_urls, tags, plugins, url_allow, url_deny, json.dumps(dict(config or {})),
         schedule, machine_id],
    )
    return _row(res)


def get_crawl(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> dict[str, Any] | None:
    """The crawl row, or None."""
    res = cur.execute("SELECT * FROM crawl WHERE id = ?", [crawl_id])
    row = res.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in res.description or []], row, strict=True))


def claim_crawl(cur: duckdb.DuckDBPyConnection, crawl_id: str, lease: float) -> dict[str, Any]:
    """queued (or started with an expired lease) → started; raises IllegalTransition."""
    return move(cur, "crawl", "claim", crawl_id, lease=lease)[0]


def seal_crawl(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> dict[str, Any]:
    """started → sealed."""
    return move(cur, "crawl", "seal", crawl_id)[0]


def set_label(cur: duckdb.DuckDBPyConnection, crawl_id: str, label: str) -> None:
    """Name the crawl (a hook's Crawl record may)."""
    cur.execute("UPDATE crawl SET label = ? WHERE id = ?", [label, crawl_id])


def merge_config(cur: duckdb.DuckDBPyConnection, crawl_id: str, patch: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """Merge `patch` into the crawl's config (its keys win); returns the merged config."""
    current = get_crawl(cur, crawl_id) or {}
    merged = {**json.loads(current.get("config") or "{}"), **dict(patch)}
    cur.execute("UPDATE crawl SET config = ? WHERE id = ?", [json.dumps(merged), crawl_id])
    return merged


def unfinished_crawls(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Crawls not yet sealed, oldest first (what `resume` picks up)."""
    res = cur.execute("SELECT * FROM crawl WHERE status <> 'sealed' ORDER BY created_at")
    cols = [d[0] for d in res.description or []]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def _row(res: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    row = res.fetchone()
    assert row is not None
    return dict(zip([d[0] for d in res.description or []], row, strict=True))


def plugin_summary(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> list[tuple[Any, ...]]:
    """Per plugin of a crawl: succeeded, noresults, skipped, failed, and one failure's error
    (its first line, so the summary table stays one row per plugin)."""
    return cur.execute(
        """
        SELECT a.plugin, count(*) FILTER (WHERE a.status = 'succeeded'),
               count(*) FILTER (WHERE a.status = 'noresults'),
               count(*) FILTER (WHERE a.status = 'skipped'),
               count(*) FILTER (WHERE a.status = 'failed'),
               split_part(trim(any_value(a.error) FILTER (WHERE a.status = 'failed')),
                          chr(10), 1)
        FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id
        WHERE s.crawl_id = ? GROUP BY a.plugin ORDER BY a.plugin
        """,
        [crawl_id],
    ).fetchall()
