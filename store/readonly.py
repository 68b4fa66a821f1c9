"""Read-only SQL: what `archiveflow sql` (without --write), `status`, `stats` and `export` run.

"Read-only" means that no statement changes the index, changes a setting or touches a file
of the host, whatever wrapper it hides in (`EXPLAIN ANALYZE <write>`, `SET profiling_output`,
`PRAGMA`, `COPY … TO`, `read_text('/etc/shadow')`, `ATTACH`, `INSTALL`/`LOAD`).

What DuckDB 1.5.5 offers, measured (`SELECT name, scope FROM duckdb_settings()`):

- Per cursor/connection: only a transaction mode. `BEGIN TRANSACTION READ ONLY` refuses every
  write to the database, including the one inside `EXPLAIN ANALYZE UPDATE/CREATE …`; it does
  not stop `COPY … TO`, `EXPORT DATABASE`, `ATTACH`, `CHECKPOINT`, `SET`, or file reads.
  The LOCAL-scope settings are profiling, progress bar, schema/search_path: nothing that
  limits access.
- Per database instance only: `enable_external_access=false` (no file reads or writes, no
  ATTACH, no INSTALL/LOAD, but also no Python replacement scans), `lock_configuration=true`
  (no SET/RESET), `disabled_filesystems`, `allowed_paths`/`allowed_directories`,
  `autoload/autoinstall_known_extensions`.

So the two modes differ:

- **Direct** (no process holds the index): the reader opens its own DuckDB instance on the
  file with `read_only=True`, then `enable_external_access=false` and `lock_configuration=true`
  (`open_read_only`). DuckDB itself refuses every write, every file access and every setting
  change, whatever the SQL looks like.
- **Through the writer** (a crawl holds the index; store/reader.py): the query runs on the
  crawl's own database instance, whose global settings cannot be narrowed: the pipeline loads
  frames by Python replacement scan (which `enable_external_access=false` turns off), loads
  the fts extension from a file and may COPY; `disabled_filesystems='LocalFileSystem'` makes
  the next CHECKPOINT a fatal error. There the query runs in a `READ ONLY` transaction that is
  always rolled back (DuckDB refuses any write to the index), after `check_query`: DuckDB's
  own parser, in a separate locked-down instance (no extension autoload or download), splits
  the text into statements; only SELECT (and EXPLAIN of a SELECT) passes, and the parsed tree
  (`json_serialize_sql`) may name only catalog tables, views and CTEs (no file name, which
  DuckDB would read by replacement scan) and table functions from `SAFE_TABLE_FUNCTIONS`
  (no `read_*`, `glob`, `query`, `checkpoint`, …). The socket only ever answers its own uid
  (store/readsock.py), so a gap here reads nothing its caller could not read anyway.

`check_query` runs in direct mode too, so both modes refuse the same statements with the same
message; there it is a courtesy, DuckDB's settings are the enforcement.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb

from archiveflow.store.db import map_errors
from archiveflow.store.errors import StoreError

if TYPE_CHECKING:  # imported where a table is made: `add` opens the index before pyarrow
    import pyarrow as pa

# Table functions that read nothing but the catalog or their arguments. Anything else
# (read_*, glob, parquet_*, sniff_csv, query/query_table, checkpoint, *_profiling, …) is
# refused without --write. An allow-list: a table function added by a later DuckDB is
# refused until someone looks at it.
SAFE_TABLE_FUNCTIONS: Final[frozenset[str]] = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
    "pg_timezone_names", "icu_calendar_names", "summary", "histogram", "histogram_values",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies",
    "duckdb_extensions", "duckdb_functions", "duckdb_indexes", "duckdb_keywords",
    "duckdb_schemas", "duckdb_sequences", "duckdb_settings", "duckdb_tables", "duckdb_types",
    "duckdb_views", "duckdb_variables", "duckdb_memory", "duckdb_optimizers",
    "pragma_collations", "pragma_database_size", "pragma_metadata_info", "pragma_platform",
    "pragma_show", "pragma_storage_info", "pragma_table_info", "pragma_user_agent",
    "pragma_version",
})
# EXPLAIN [ANALYZE] [(options)] <statement>
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)
_CATALOG_SQL: Final[str] = (
    "SELECT lower(table_name) FROM duckdb_tables() "
    "UNION SELECT lower(view_name) FROM duckdb_views()"
)
# Settings of the parser's instance and of a direct reader (before the lock).
_NO_AUTOLOAD: Final[dict[str, Any]] = {
    "autoload_known_extensions": False, "autoinstall_known_extensions": False,
}


class QueryError(StoreError):
    """A query that failed or was refused; the message says why."""


@dataclass(frozen=True)
class Checked:
    """A statement that passed `check_query`: its text as DuckDB parsed it (PRAGMA forms
    already rewritten to SELECT) and the table names it reads."""

    sql: str
    tables: frozenset[str]


_parser_lock = threading.Lock()
_parser_con: duckdb.DuckDBPyConnection | None = None


def _parser() -> duckdb.DuckDBPyConnection:
    """A cursor of an empty in-memory instance that can only parse (one per call: cursors
    are not shared between threads)."""
    global _parser_con
    with _parser_lock:
        if _parser_con is None:
            con = duckdb.connect(":memory:", config=dict(_NO_AUTOLOAD))
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            _parser_con = con
        return _parser_con.cursor()


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _select_refs(cur: duckdb.DuckDBPyConnection, sql: str) -> frozenset[str]:
    """Table names a SELECT reads; QueryError if it calls a table function not known safe."""
    row = cur.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise QueryError(f"cannot check this statement read-only: {tree.get('error_message')}; "
                         "add --write to run it as is")
    tables: set[str] = set()
    ctes: set[str] = set()
    for node in _walk(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name not in SAFE_TABLE_FUNCTIONS:
                raise QueryError(f"table function {name}() may read files or run other SQL; "
                                 "it is not allowed without --write")
        elif kind == "BASE_TABLE":
            tables.add(str(node.get("table_name", "")).lower())
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            ctes.update(str(e.get("key", "")).lower() for e in cte_map.get("map") or [])
    return frozenset(tables - ctes)


def check_query(sql: str) -> list[Checked]:
    """The statements of `sql` if every one is read-only; else QueryError saying why."""
    cur = _parser()
    try:
        try:
            statements = cur.extract_statements(sql)
        except duckdb.Error as e:
            raise QueryError(f"SQL error: {_first_line(e)}") from e
        if not statements:
            raise QueryError("empty query: give one or more SQL statements")
        checked = []
        for st in statements:
            kind = str(st.type).rsplit(".", 1)[-1].upper()
            text = st.query
            inner = text
            if kind == "EXPLAIN":
                m = _EXPLAIN.match(text)
                inner_sts = cur.extract_statements(text[m.end():]) if m else []
                if len(inner_sts) != 1 or str(inner_sts[0].type).rsplit(".", 1)[-1] != "SELECT":
                    raise QueryError("EXPLAIN of a statement other than SELECT is not allowed "
                                     "without --write")
                inner = inner_sts[0].query
            elif kind != "SELECT":
                raise QueryError(f"{kind} statements may change the index, a setting or a "
                                 "file; add --write to allow them")
            checked.append(Checked(text, _select_refs(cur, inner)))
        return checked
    finally:
        cur.close()


def check_tables(cur: duckdb.DuckDBPyConnection, checked: Iterable[Checked]) -> None:
    """QueryError if a statement names a table that is not in the catalog: DuckDB would
    try it as a file name (or a Python variable of the serving process) instead."""
    wanted = set().union(*(c.tables for c in checked))
    if not wanted:
        return
    known = {r[0] for r in cur.execute(_CATALOG_SQL).fetchall()}
    unknown = sorted(wanted - known)
    if unknown:
        raise QueryError(f"no table or view named {unknown[0]!r} in the index (reading files "
                         "by name is not allowed without --write)")


def run_checked(cur: duckdb.DuckDBPyConnection, checked: Sequence[Checked],
                params: list[Any] | None) -> pa.Table:
    """Run checked statements in a READ ONLY transaction that is always rolled back;
    returns the last statement's rows (`params` bind the last statement)."""
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
    except duckdb.Error as e:
        raise QueryError(f"cannot start a read-only transaction: {_first_line(e)}") from e
    try:
        check_tables(cur, checked)
        for c in checked[:-1]:
            cur.execute(c.sql)
        last = checked[-1].sql
        res = cur.execute(last, params) if params else cur.execute(last)
        if res.description is None:
            import pyarrow as pa

            return pa.table({"ok": [True]})
        return res.to_arrow_table()
    except duckdb.Error as e:
        raise QueryError(f"SQL error: {_first_line(e)}") from e
    finally:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass


def run_read_only(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
                  ) -> pa.Table:
    """`check_query` then `run_checked`: the read path for any connection."""
    return run_checked(cur, check_query(sql), params)


def run_any(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
            ) -> pa.Table:
    """Run `sql` as given (--write, direct mode only); the last statement's rows."""
    try:
        statements = cur.extract_statements(sql)
        if not statements:
            raise QueryError("empty query: give one or more SQL statements")
        for st in statements[:-1]:
            cur.execute(st)
        res = cur.execute(statements[-1], params) if params else cur.execute(statements[-1])
        if res.description is None:
            import pyarrow as pa

            return pa.table({"ok": [True]})
        return res.to_arrow_table()
    except duckdb.Error as e:
        raise QueryError(f"SQL error: {_first_line(e)}") from e


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off file access and freeze the settings of this connection's whole instance."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def open_read_only(path: Path, preload: Sequence[str] = ()) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB instance on the index file that can touch no other file and change
    no setting. `preload`: statements run before the lock (e.g. LOAD of the fts extension
    from its wheel, which the lock would refuse)."""
    with map_errors(path):
        con = duckdb.connect(str(path), read_only=True, config=dict(_NO_AUTOLOAD))
    try:
        for stmt in preload:
            con.execute(stmt)
        lock_down(con)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def read_only_connection(path: Path, preload: Sequence[str] = ()
                         ) -> Iterator[duckdb.DuckDBPyConnection]:
    """`open_read_only` as a context manager."""
    con = open_read_only(path, preload)
    try:
        yield con
    finally:
        con.close()
