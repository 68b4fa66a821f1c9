"""Hook process rows (table `process`): one per hook run, for analytics and cleanup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import polars as pl

from archiveflow.store.load import frame, insert_frame


def add_processes(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]], *,
                  fresh_ids: bool = False) -> int:
    """Record hook runs (id, owner_type, owner_id, machine_id, hook_name, pid, cmd, cwd,
    started_at, ended_at, exit_code); returns how many were inserted.

    `fresh_ids`: the ids are new UUIDv7s and a retry re-runs the caller's whole rolled-back
    transaction, so the duplicate check is skipped (it scans the id column of every process
    row in the index).
    """
    if not rows:
        return 0
    schema = frame("process", []).schema
    df = frame("process", pl.DataFrame([{k: r.get(k) for k in schema} for r in rows],
                                       schema=schema, orient="row"))
    return len(insert_frame(cur, "process", df,
                            on_conflict="error" if fresh_ids else "nothing"))
