"""Machine rows: this host's identity and its config patches."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import duckdb

from archiveflow.store.db import is_shared


def upsert_machine(
    cur: duckdb.DuckDBPyConnection, *, machine_id: str, hostname: str, os: str, arch: str
) -> None:
    """Create this machine's row on first use; refresh hostname/os/arch afterwards."""
    if is_shared(cur):  # no ON CONFLICT without a key: update, else insert, in one transaction
        cur.execute("BEGIN")
        try:
            cur.execute("UPDATE machine SET hostname = ?, os = ?, arch = ?, modified_at = now() "
                        "WHERE id = ?", [hostname, os, arch, machine_id])
            cur.execute("INSERT INTO machine (id, hostname, os, arch) SELECT ?, ?, ?, ? "
                        "WHERE NOT EXISTS (SELECT 1 FROM machine WHERE id = ?)",
                        [machine_id, hostname, os, arch, machine_id])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return
    cur.execute(
        """
        INSERT INTO machine (id, hostname, os, arch) VALUES (?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, os = excluded.os,
            arch = excluded.arch, modified_at = now()
        """,
        [machine_id, hostname, os, arch],
    )


def machine_config(cur: duckdb.DuckDBPyConnection, machine_id: str) -> dict[str, Any]:
    """The machine's config patches (e.g. resolved *_BINARY paths)."""
    row = cur.execute("SELECT config FROM machine WHERE id = ?", [machine_id]).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def patch_machine_config(
    cur: duckdb.DuckDBPyConnection, machine_id: str, patch: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge `patch` into the machine's config (later keys win) and return the result."""
    merged = {**machine_config(cur, machine_id), **dict(patch)}
    cur.execute(
        "UPDATE machine SET config = ?, modified_at = now() WHERE id = ?",
        [json.dumps(merged), machine_id],
    )
    return merged
