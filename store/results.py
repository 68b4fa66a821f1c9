"""ArchiveResult rows: create pending ones in bulk, claim, finish in bulk, record outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import duckdb
import polars as pl

from archiveflow.store.db import map_errors
from archiveflow.store.errors import IllegalTransition
from archiveflow.store.load import TS, frame, insert_frame, scan
from archiveflow.store.records import FINAL_RESULT_STATUSES
from archiveflow.store.transitions import MOVES, move

# A started result may finish in any final status that some declared move leads to.
_FINISH_TARGETS: Final[frozenset[str]] = frozenset(
    m.target for m in MOVES["archiveresult"].values() if "started" in m.sources
) & frozenset(FINAL_RESULT_STATUSES)

# The columns a finished ArchiveResult sets: declared here, once (load.SCHEMAS holds the
# columns a new row is inserted with, which are others).
FINISH_SCHEMA: Final[dict[str, pl.DataType]] = {
    "id": pl.Utf8(), "status": pl.Utf8(), "output_str": pl.Utf8(), "output_json": pl.Utf8(),
    "error": pl.Utf8(), "start_ts": TS, "end_ts": TS, "exit_code": pl.Int32(),
    "output_size": pl.Int64(), "output_count": pl.Int32(),
}


def create_pending(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Insert queued ArchiveResults (snapshot_id, plugin, hook_name, output_dir, is_background);
    existing (snapshot_id, hook_name) pairs are kept as they are. Returns new ids."""
    return insert_frame(cur, "archiveresult", frame("archiveresult", rows))


def results_of(cur: duckdb.DuckDBPyConnection, snapshot_ids: Sequence[str]
               ) -> list[dict[str, Any]]:
    """Every ArchiveResult of these snapshots (id, snapshot_id, plugin, hook_name, status,
    is_background): one query for a whole batch of snapshots."""
    if not snapshot_ids:
        return []
    res = cur.execute(
        "SELECT id, snapshot_id, plugin, hook_name, status, is_background FROM archiveresult "
        "WHERE snapshot_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(snapshot_ids)],
    )
    cols = [d[0] for d in res.description or []]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def create_started(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]],
                   lease: float) -> int:
    """Insert new ArchiveResults (id, snapshot_id, plugin, hook_name, output_dir,
    is_background) already `started` under a lease: the create and the claim of a fresh
    snapshot's results in one statement. The caller knows the (snapshot_id, hook_name)
    pairs are new (it read them in the same transaction); a duplicate is an error."""
    df = frame("archiveresult", rows)
    if df.is_empty():
        return 0
    _af_started = scan(cur, df.select(  # noqa: F841 - read by name below (a replacement scan)
        "id", "snapshot_id", "plugin", "hook_name", "output_dir", "is_background"))
    with map_errors():
        cur.execute(
            "INSERT INTO archiveresult (id, snapshot_id, plugin, hook_name, output_dir, "
            "is_background, status, retry_at) "
            "SELECT *, 'started', now() + to_seconds(?::DOUBLE) FROM _af_started",
            [float(lease)],
        )
    return df.height


def finish_results(cur: duckdb.DuckDBPyConnection, outcomes: Sequence[Mapping[str, Any]]
                   ) -> list[str]:
    """started → final status for many results in one UPDATE … FROM a frame.

    Each outcome has id and status (succeeded/failed/skipped/noresults) plus any of
    output_str, output_json, error, start_ts, end_ts, exit_code, output_size, output_count.
    Rows not `started` are left alone (and not returned).
    """
    if not outcomes:
        return []
    bad = {o["status"] for o in outcomes} - _FINISH_TARGETS
    if bad:
        raise IllegalTransition(f"archiveresult cannot finish as {sorted(bad)}")
    rows = [
        {**{k: o.get(k) for k in FINISH_SCHEMA},
         "output_json": None if o.get("output_json") is None else json.dumps(o["output_json"])}
        for o in outcomes
    ]
    _af_finish = scan(cur, pl.DataFrame(  # noqa: F841
        rows, schema=FINISH_SCHEMA, orient="row").unique("id", keep="last"))
    # Read by its Python name (a DuckDB replacement scan): registering a view costs 4-7 ms.
    res = cur.execute(
        """
        UPDATE archiveresult AS a SET
            status = f.status, retry_at = NULL, modified_at = now(),
            output_str = f.output_str, output_json = f.output_json, error = f.error,
            start_ts = coalesce(f.start_ts, a.start_ts), end_ts = coalesce(f.end_ts, now()),
            exit_code = f.exit_code, output_size = f.output_size,
            output_count = f.output_count, attempts = greatest(a.attempts, 1)
        FROM _af_finish AS f
        WHERE a.id = f.id AND a.status = 'started'
        RETURNING a.id
        """
    )
    return [r[0] for r in res.fetchall()]


def set_attempts(cur: duckdb.DuckDBPyConnection, attempts: Mapping[str, int]) -> int:
    """Record how many times each ArchiveResult's hook has run (retries and re-runs by
    `archiveflow update` included), in one statement. A result that ran once needs no call:
    finishing it counts its one attempt."""
    if not attempts:
        return 0
    with map_errors():
        res = cur.execute(
            "UPDATE archiveresult AS a SET attempts = t.n "
            "FROM (SELECT unnest(?::VARCHAR[]) AS id, unnest(?::INTEGER[]) AS n) AS t "
            "WHERE a.id = t.id RETURNING a.id",
            [list(attempts), list(attempts.values())],
        )
        return len(res.fetchall())


RERUNNABLE: Final[tuple[str, ...]] = MOVES["archiveresult"]["rerun"].sources


def requeue_for_update(cur: duckdb.DuckDBPyConnection, *, status: str = "failed",
                       crawl_id: str | None = None, plugins: Sequence[str] | None = None,
                       url_contains: str | None = None) -> dict[str, list[str]]:
    """`archiveflow update`: put the matching finished ArchiveResults of sealed crawls back
    in the queue, and re-open their snapshots and crawls (sealed → queued), so the normal
    crawl path runs them again. Call inside a transaction: all of it or nothing.

    Filters: results in `status` (failed, noresults or skipped), of crawl `crawl_id`, of
    `plugins`, of snapshots whose URL contains `url_contains` (as typed, not a pattern).
    Only sealed crawls: a crawl still queued or running is `archiveflow resume`'s.
    Returns the ids moved: {"results": […], "snapshots": […], "crawls": […]}.
    """
    if status not in RERUNNABLE:
        raise IllegalTransition(f"archiveresult cannot be re-run from {status}")
    res = cur.execute(
        "SELECT a.id, a.snapshot_id, s.crawl_id FROM archiveresult a "
        "JOIN snapshot s ON s.id = a.snapshot_id JOIN crawl c ON c.id = s.crawl_id "
        "WHERE a.status = ? AND c.status = 'sealed' AND s.status = 'sealed' "
        "AND (?::VARCHAR IS NULL OR c.id = ?) "
        "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], a.plugin)) "
        "AND (?::VARCHAR IS NULL OR contains(s.url, ?)) ORDER BY a.id",
        [status, crawl_id, crawl_id, list(plugins) if plugins else None,
         list(plugins) if plugins else None, url_contains, url_contains],
    ).fetchall()
    results = [r["id"] for r in move(cur, "archiveresult", "rerun", [r[0] for r in res],
                                  returning="id")]
    moved = set(results)
    snapshots = sorted({r[1] for r in res if r[0] in moved})
    crawls = sorted({r[2] for r in res if r[0] in moved})
    move(cur, "snapshot", "requeue", snapshots, returning="id")
    move(cur, "crawl", "requeue", crawls, returning="id")
    return {"results": results, "snapshots": snapshots, "crawls": crawls}


def status_counts(cur: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> dict[str, int]:
    """These ArchiveResults by status (e.g. the ones an update re-ran)."""
    if not ids:
        return {}
    rows = cur.execute(
        "SELECT status, count(*) FROM archiveresult WHERE id IN (SELECT unnest(?::VARCHAR[])) "
        "GROUP BY status", [list(ids)]).fetchall()
    return {s: int(n) for s, n in rows}


def add_output_files(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Record (archiveresult_id, path, size, mimetype) rows; replaces a result's earlier list."""
    df = frame("output_file", rows)
    if df.is_empty():
        return 0
    ids = df["archiveresult_id"].unique().to_list()
    cur.execute(
        "DELETE FROM output_file WHERE archiveresult_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
    )
    return len(insert_frame(cur, "output_file", df, on_conflict="error"))


def add_record_errors(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Log invalid hook records (owner_id, hook_name, line, error)."""
    return len(insert_frame(cur, "record_error", frame("record_error", rows), on_conflict="error"))


def result_counts(cur: duckdb.DuckDBPyConnection, crawl_id: str) -> dict[str, int]:
    """ArchiveResults of a crawl by status."""
    rows = cur.execute(
        "SELECT a.status, count(*) FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id "
        "WHERE s.crawl_id = ? GROUP BY a.status",
        [crawl_id],
    ).fetchall()
    return {s: int(n) for s, n in rows}
