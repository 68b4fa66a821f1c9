"""State moves for every stateful table, declared as data and applied by one helper.

A move is one `UPDATE … WHERE id IN (…) AND status IN (<from>) RETURNING …`: it either wins
or does nothing, so two workers racing for a row can never both win. `retry_at` doubles as
the lease: a `started` row whose `retry_at` has passed belongs to a dead worker and is
claimed again by `claim` moves; `renew_leases` keeps a lease this worker still holds, and
`expire_leases` hands every lease of a dead process back after a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import duckdb

from archiveflow.store.db import is_shared, map_errors
from archiveflow.store.errors import IllegalTransition, RowNotFound, WriteConflict


@dataclass(frozen=True)
class Move:
    """A legal move: from any of `sources` to `target`."""

    sources: tuple[str, ...]
    target: str
    # claim moves also take `started` rows whose lease (retry_at) has expired
    reclaims_expired: bool = False
    # a lease (seconds) is set on retry_at by moves into `started`; other moves clear it
    leases: bool = False


_CLAIM = Move(("queued",), "started", reclaims_expired=True, leases=True)

MOVES: Final[dict[str, dict[str, Move]]] = {
    "crawl": {
        "claim": _CLAIM,
        "seal": Move(("started",), "sealed"),
        "requeue": Move(("started", "sealed"), "queued"),
    },
    "snapshot": {
        "claim": _CLAIM,
        "seal": Move(("started",), "sealed"),
        "requeue": Move(("started", "sealed"), "queued"),
    },
    "archiveresult": {
        "claim": _CLAIM,
        "succeed": Move(("started",), "succeeded"),
        "fail": Move(("queued", "started"), "failed"),
        "skip": Move(("queued", "started"), "skipped"),
        "noresults": Move(("started",), "noresults"),
        "requeue": Move(("started", "failed"), "queued"),
        # `archiveflow update`: a finished result that did not succeed runs again.
        "rerun": Move(("failed", "noresults", "skipped"), "queued"),
    },
    "machine_binary": {
        "claim": _CLAIM,
        "succeed": Move(("started",), "succeeded"),
        "fail": Move(("started",), "failed"),
        "requeue": Move(("started", "succeeded", "failed"), "queued"),
    },
}

STATUSES: Final[dict[str, tuple[str, ...]]] = {
    "crawl": ("queued", "started", "sealed"),
    "snapshot": ("queued", "started", "sealed"),
    "archiveresult": ("queued", "started", "succeeded", "failed", "skipped", "noresults"),
    "machine_binary": ("queued", "started", "succeeded", "failed"),
}

# Columns a move may set besides status/retry_at/modified_at (never user-supplied names).
SETTABLE: Final[dict[str, frozenset[str]]] = {
    "crawl": frozenset({"flow_run_id", "machine_id", "label"}),
    "snapshot": frozenset({"title"}),
    "archiveresult": frozenset(
        {"output_str", "output_json", "error", "start_ts", "end_ts", "exit_code",
         "output_size", "output_count", "attempts"}
    ),
    "machine_binary": frozenset({"abspath", "version", "sha256", "binprovider", "error"}),
}


def get_move(table: str, name: str) -> Move:
    """The declared move, or IllegalTransition if the table has no such move."""
    try:
        return MOVES[table][name]
    except KeyError:
        raise IllegalTransition(f"{table} has no move {name!r}") from None


def _status_clause(move: Move) -> str:
    placeholders = ", ".join("?" for _ in move.sources)
    clause = f"status IN ({placeholders})"
    if move.reclaims_expired:
        clause = f"({clause} AND (retry_at IS NULL OR retry_at <= now())" \
                 " OR (status = 'started' AND retry_at < now()))"
    return clause


def _set_clause(table: str, move: Move, fields: Mapping[str, Any], lease: float | None
                ) -> tuple[str, list[Any]]:
    bad = set(fields) - SETTABLE[table]
    if bad:
        raise ValueError(f"{table} move cannot set {sorted(bad)}")
    parts = ["status = ?", "modified_at = now()"]
    params: list[Any] = [move.target]
    if move.leases:
        parts.append("retry_at = now() + to_seconds(?::DOUBLE)")
        params.append(float(lease if lease is not None else 300.0))
    else:
        parts.append("retry_at = NULL")
    for col, val in fields.items():
        parts.append(f"{col} = ?")
        params.append(val)
    return ", ".join(parts), params


def move(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    name: str,
    ids: str | Sequence[str],
    *,
    fields: Mapping[str, Any] | None = None,
    lease: float | None = None,
    returning: str = "*",
) -> list[dict[str, Any]]:
    """Apply move `name` to one id (strict) or many ids (those that can move do).

    `returning="id"` when the caller does not look at the rows: converting every column of
    the moved rows to Python (timestamps with time zones, JSON) is most of a small move's cost.

    One id: returns its updated row, raises IllegalTransition when the row is in a status
    the move does not start from, RowNotFound when there is no such row. Many ids: returns
    the rows that moved; the others are left as they are. A concurrent writer that won the
    same row makes this call lose (empty result), never both win.
    """
    if table not in MOVES:
        raise IllegalTransition(f"no state machine for table {table!r}")
    mv = get_move(table, name)
    single = isinstance(ids, str)
    id_list = [ids] if isinstance(ids, str) else list(ids)
    if not id_list:
        return []
    set_sql, set_params = _set_clause(table, mv, fields or {}, lease)
    sql = (
        f"UPDATE {table} SET {set_sql} "
        f"WHERE id IN (SELECT unnest(?::VARCHAR[])) AND {_status_clause(mv)} "
        f"RETURNING {'id' if returning == 'id' else '*'}"
    )
    try:
        with map_errors():
            res = cur.execute(sql, [*set_params, id_list, *mv.sources])
            cols = [d[0] for d in res.description or []]
            rows = [dict(zip(cols, r, strict=True)) for r in res.fetchall()]
    except WriteConflict:
        if single:
            raise
        return []
    if single and not rows:
        found = cur.execute(f"SELECT status FROM {table} WHERE id = ?", [ids]).fetchone()
        if found is None:
            raise RowNotFound(f"{table} {ids} does not exist")
        raise IllegalTransition(
            f"{table} {ids} is {found[0]}; {name} moves only from "
            f"{'/'.join(mv.sources)} to {mv.target}"
        )
    return rows


def claim_next(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    scope_sql: str,
    scope_params: Sequence[Any],
    *,
    limit: int,
    lease: float,
    order_by: str = "created_at",
) -> list[dict[str, Any]]:
    """Claim up to `limit` ready rows in scope (queued and due, or started with lease expired).

    `scope_sql` is a fixed SQL condition written by the store (never user text) with `?`
    parameters. Returns the rows won; a lost race returns fewer (or none).
    """
    mv = get_move(table, "claim")
    set_sql, set_params = _set_clause(table, mv, {}, lease)
    status = _status_clause(mv)
    # On the local index the chosen rows are named by rowid: the UPDATE then finds them by
    # a rowid range (DuckDB's join filter) instead of reading the whole id column, which has
    # no index (store/schema.sql): at 100k snapshots 17.7 -> 11.8 ms of CPU per claim
    # (bench/README.md, #18). Same transaction, same statement: the rowids are the rows the
    # select saw. The shared index's cursor (store/lake.py) selects ids itself.
    key = "id" if is_shared(cur) else "rowid"
    sql = (
        f"UPDATE {table} SET {set_sql} WHERE {key} IN ("
        f"SELECT {key} FROM {table} WHERE ({scope_sql}) AND {status} ORDER BY {order_by} "
        f"LIMIT ?) AND {status} RETURNING *"
    )
    params = [*set_params, *scope_params, *mv.sources, limit, *mv.sources]
    try:
        with map_errors():
            res = cur.execute(sql, params)
            cols = [d[0] for d in res.description or []]
            return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]
    except WriteConflict:
        return []


# Tables whose `started` rows hold a lease (retry_at).
LEASED: Final[tuple[str, ...]] = tuple(MOVES)


def renew_leases(cur: duckdb.DuckDBPyConnection, table: str, ids: Sequence[str],
                 lease: float) -> None:
    """Push the lease of `started` rows this worker still holds (their status stays)."""
    if table not in LEASED:
        raise ValueError(f"no lease on table {table!r}")
    if ids:
        cur.execute(
            f"UPDATE {table} SET retry_at = now() + to_seconds(?::DOUBLE) "
            "WHERE id IN (SELECT unnest(?::VARCHAR[])) AND status = 'started'",
            [float(lease), list(ids)],
        )


def expire_leases(cur: duckdb.DuckDBPyConnection) -> int:
    """Expire the lease of every `started` row of every table; returns how many.

    Only for a worker that knows no other one is alive: a local index has one writer at a
    time, so whoever could open it may take back what a dead process held. The `claim`
    moves then pick those rows up again.
    """
    if is_shared(cur):  # other machines' workers hold live leases: they run out on their own
        return 0
    n = 0
    for table in LEASED:
        res = cur.execute(
            f"UPDATE {table} SET retry_at = now() - INTERVAL 1 SECOND "
            "WHERE status = 'started' RETURNING id").fetchall()
        n += len(res)
    return n
