"""Binary rows (table machine_binary): one per (machine, name), installed by provider hooks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from archiveflow.store.ids import new_id
from archiveflow.store.transitions import move


def declare_binaries(
    cur: duckdb.DuckDBPyConnection, machine_id: str, declared: Sequence[Mapping[str, Any]]
) -> None:
    """Insert a queued row for each declared binary this machine has no row for yet.

    `declared` items have name, bin_providers (csv) and overrides (dict).
    """
    rows = [
        {
            "id": None, "machine_id": machine_id, "name": d["name"], "status": "queued",
            "output_dir": f"machines/{machine_id}/binaries/{d['name']}",
            "bin_providers": d.get("bin_providers") or "env",
            "overrides": json.dumps(d.get("overrides") or {}),
        }
        for d in declared
    ]
    if not rows:
        return
    import polars as pl  # not at import: `add` reads binary rows before its first hook

    from archiveflow.store.load import frame, insert_frame

    df = frame("machine_binary", rows)
    df = df.with_columns(pl.Series("id", [new_id() for _ in range(df.height)]))
    df = df.with_columns((pl.col("output_dir") + "/" + pl.col("id")).alias("output_dir"))
    insert_frame(cur, "machine_binary", df)


def list_binaries(cur: duckdb.DuckDBPyConnection, machine_id: str,
                  names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """This machine's binary rows (optionally only some names), by name."""
    sql = "SELECT * FROM machine_binary WHERE machine_id = ?"
    params: list[Any] = [machine_id]
    if names is not None:
        sql += " AND name IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(names))
    res = cur.execute(sql + " ORDER BY name", params)
    cols = [d[0] for d in res.description or []]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def claim_binary(cur: duckdb.DuckDBPyConnection, binary_id: str, lease: float) -> dict[str, Any]:
    """queued → started (strict)."""
    return move(cur, "machine_binary", "claim", binary_id, lease=lease)[0]


def succeed_binary(cur: duckdb.DuckDBPyConnection, binary_id: str, *, abspath: str,
                   version: str | None, sha256: str | None, binprovider: str) -> dict[str, Any]:
    """started → succeeded with what the provider found."""
    return move(cur, "machine_binary", "succeed", binary_id, fields={
        "abspath": abspath, "version": version, "sha256": sha256, "binprovider": binprovider,
        "error": None,
    })[0]


def fail_binary(cur: duckdb.DuckDBPyConnection, binary_id: str, error: str) -> dict[str, Any]:
    """started → failed with every provider's reason."""
    return move(cur, "machine_binary", "fail", binary_id, fields={"error": error})[0]


def requeue_binaries(cur: duckdb.DuckDBPyConnection, ids: list[str]) -> list[dict[str, Any]]:
    """Back to queued (e.g. the binary vanished from its abspath, or a retry was asked)."""
    return move(cur, "machine_binary", "requeue", ids)
