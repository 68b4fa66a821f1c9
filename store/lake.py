"""The shared index: DuckLake with its catalog in PostgreSQL and its data files on storage
every machine reaches. `ARCHIVEFLOW_CATALOG` (a PostgreSQL URI) switches a data folder to
it; without it the index stays the embedded `index.duckdb` file and nothing here runs.

What DuckLake 1.5.5 does not have, and how the store makes up for it (observed here with a
local PostgreSQL 15 catalog, see docs/scaling.md):

- No PRIMARY KEY/UNIQUE/CHECK constraints, indexes or sequences (`NotImplementedException`).
  The schema is schema.sql with those clauses taken out (`lake_schema`). The inserts already
  skip existing keys with an anti-join (store/load.py); two writers racing on the same key
  would both commit (DuckLake lets two INSERTs into one table through), so every write
  transaction holds the cluster-wide write lock below, and every INSERT into a keyed table
  also updates the one row of `lake_lock`, so that even a writer without the lock conflicts.
  Status values are written only by the declared moves (store/transitions.py).
- No RETURNING on INSERT or UPDATE. `LakeCursor` runs such a statement as a transaction:
  the rows that will move are selected first (by id), the UPDATE then moves exactly those
  ids (its WHERE is not evaluated a second time: a `LIMIT` over tied rows picked other
  rows inside the UPDATE than in the select), and the rows are read back; ids are the moved
  rows because the transaction reads one snapshot under the write lock, the UPDATE's count
  is checked, and a concurrent change of the same table fails its COMMIT.
- Conflicts are per table, not per row: two transactions that UPDATE (or INSERT and UPDATE)
  one table conflict at COMMIT even on different rows ("Transaction conflict - attempting
  to insert into table … but another transaction has deleted inlined data from it");
  two INSERTs do not. So writers would mostly retry each other. Instead, every write
  transaction of every process takes a PostgreSQL advisory lock (`WriteLock`) for its
  duration: writes are serialised cluster-wide, reads never wait, and the optimistic check
  stays a backstop (a conflict is retried, never dropped). A killed process's lock goes
  with its PostgreSQL session.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Final

import duckdb

from archiveflow.store.errors import StoreError, WriteConflict

LAKE: Final[str] = "lake"  # the attached catalog's name
LOCK_KEY: Final[int] = 0x61726368  # the advisory lock of the index's writers ("arch")
# Tables with a natural key (PRIMARY KEY/UNIQUE in schema.sql): inserts into them are
# serialised (see the module docstring).
KEYED: Final[frozenset[str]] = frozenset(
    {"machine", "crawl", "snapshot", "archiveresult", "machine_binary", "tag", "snapshot_tag",
     "schema_version"})
_WRITE_WORDS: Final[tuple[str, ...]] = ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP",
                                        "ALTER", "MERGE")
RETRIES: Final[int] = 40  # attempts at a statement or transaction that lost a conflict
CATALOG_WAIT: Final[float] = 120.0  # s a statement waits for the catalog to come back


class CatalogUnavailable(StoreError):
    """The shared index's catalog (PostgreSQL) or its storage cannot be reached."""


def _wheel_file(module: str, pattern: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError as e:
        wheel = module.replace("_", "-")
        raise StoreError(f"the shared index needs the {wheel} wheel: pip install "
                         f"{wheel}=={duckdb.__version__}") from e
    root = Path(str(mod.__file__)).parent
    found = sorted(root.rglob(pattern))
    exact = [p for p in found if f"v{duckdb.__version__}" in p.parts]
    if not (exact or found):
        raise StoreError(f"no {pattern} inside {root}")
    return (exact or found)[0]


@cache
def extension_files() -> tuple[Path, Path]:
    """(ducklake, postgres_scanner) extension files from their PyPI wheels (never downloaded).

    DuckDB names the extension after its file, and the postgres wheel ships
    `postgres.duckdb_extension` while the extension calls itself `postgres_scanner`: it is
    loaded through a symlink of that name in a folder of this user only.
    """
    ducklake = _wheel_file("duckdb_extension_ducklake", "*.duckdb_extension")
    postgres = _wheel_file("duckdb_extension_postgres", "*.duckdb_extension")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "archiveflow" / f"duckdb-{duckdb.__version__}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = folder.lstat()
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o022:
        raise StoreError(f"{folder} is not a folder of this user only; remove it")
    link = folder / "postgres_scanner.duckdb_extension"
    if not (link.is_symlink() and Path(os.readlink(link)) == postgres):
        tmp = folder / f".{os.getpid()}.link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(postgres)
        tmp.replace(link)
    return ducklake, link


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def data_path(storage: str | Path) -> str:
    """DuckLake's DATA_PATH for a storage root (a folder, or an s3:// URL), ending in '/'."""
    text = str(storage)
    return text if text.endswith("/") else text + "/"


def connect(catalog: str, storage: str | Path, config: dict[str, Any], *,
            explicit: bool = False, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as the default catalog. `explicit`: the
    storage root was configured (else it is the default, used only for a new catalog).
    `read_only`: DuckDB refuses every write to the lake."""
    ducklake, postgres = extension_files()
    con = duckdb.connect(":memory:", config={**config, "autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    try:
        con.execute(f"LOAD {_quote(str(ducklake))}")
        con.execute(f"LOAD {_quote(str(postgres))}")
        if "://" not in str(storage):
            Path(storage).mkdir(parents=True, exist_ok=True)
        target = _quote("ducklake:postgres:" + catalog)
        # The catalog remembers its data path. An explicit storage root wins (another
        # machine mounts the same storage elsewhere); the default one only starts a catalog.
        opts = f"DATA_PATH {_quote(data_path(storage))}" + (", READ_ONLY" if read_only else "")
        try:
            con.execute(f"ATTACH {target} AS {LAKE} ({opts}"
                        f"{', OVERRIDE_DATA_PATH true' if explicit else ''})")
        except duckdb.Error as e:
            if explicit or "does not match existing data path" not in str(e):
                raise
            con.execute(f"ATTACH {target} AS {LAKE}" + (" (READ_ONLY)" if read_only else ""))
        con.execute(f"USE {LAKE}")
    except duckdb.Error as e:
        con.close()
        raise CatalogUnavailable(f"shared index (catalog {redact(catalog)}): "
                                 f"{str(e).splitlines()[0]}") from e
    return con


def redact(dsn: str) -> str:
    """The DSN without its password (for messages)."""
    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


# --- schema --------------------------------------------------------------------------------

def _drop_parens_after(text: str, word: str) -> str:
    """Remove every `word (…)` (balanced parentheses) from text."""
    out = []
    i = 0
    pat = re.compile(rf"\b{word}\s*\(", re.IGNORECASE)
    while (m := pat.search(text, i)) is not None:
        out.append(text[i:m.start()])
        depth, j = 0, m.end() - 1
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        i = j
    out.append(text[i:])
    return "".join(out)


def lake_schema(sql: str) -> str:
    """schema.sql without what DuckLake cannot hold: PRIMARY KEY/UNIQUE/CHECK and indexes
    (the store keeps those invariants itself; see the module docstring)."""
    sql = re.sub(r"^\s*CREATE INDEX[^;]*;", "", sql, flags=re.MULTILINE | re.IGNORECASE)
    sql = re.sub(r"\s+PRIMARY KEY\b(?!\s*\()", "", sql)
    sql = _drop_parens_after(sql, "PRIMARY KEY")
    sql = _drop_parens_after(sql, "UNIQUE")
    sql = _drop_parens_after(sql, "CHECK")
    sql = re.sub(r"--[^\n]*", "", sql)
    sql = re.sub(r",(\s*,)+", ",", sql)  # a table-level constraint removed between columns
    sql = re.sub(r",\s*\)\s*;", "\n);", sql)  # … or at the end of a table
    return sql + ("\nCREATE TABLE IF NOT EXISTS lake_lock (n BIGINT NOT NULL);\n"
                  "INSERT INTO lake_lock SELECT 0 WHERE NOT EXISTS (FROM lake_lock);\n")


# --- the cluster-wide write lock -------------------------------------------------------------

class WriteLock:
    """A PostgreSQL advisory lock held around every write transaction of this process (and a
    thread lock, since PostgreSQL's lock is re-entrant per session). One connection of its
    own, on a private event loop thread (asyncpg; Prefect's PostgreSQL driver)."""

    def __init__(self, catalog: str) -> None:
        self.catalog = catalog
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="archiveflow-lake-lock")
        self._thread.start()
        self._conn: Any = None

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> Any:
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(pg_uri(self.catalog), timeout=10)
        return self._conn

    async def _lock(self) -> None:
        for attempt in range(60):
            try:
                conn = await self._connect()
                await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
                return
            except (TimeoutError, OSError, ConnectionError) as e:
                err: BaseException = e
            except Exception as e:  # noqa: BLE001 - asyncpg's errors: reconnect and retry
                if "asyncpg" not in type(e).__module__:
                    raise
                err = e
            self._conn = None
            if attempt == 59:
                raise CatalogUnavailable(f"catalog {redact(self.catalog)}: {err}")
            await asyncio.sleep(0.5)

    async def _unlock(self) -> None:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            except Exception:  # noqa: BLE001 - a lost session has released it already
                self._conn = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (re-entrant within a thread)."""
        with self._thread_lock:
            if self._depth == 0:
                self._run(self._lock())
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._run(self._unlock(), timeout=30)

    def close(self) -> None:
        async def _close() -> None:
            if self._conn is not None:
                await self._conn.close()
        try:
            self._run(_close(), timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def probe_catalog(catalog: str, timeout: float = 5.0) -> str:
    """The catalog server's version, asked over a connection of its own (`doctor`);
    CatalogUnavailable with the reason when it does not answer."""
    import asyncpg

    async def ask() -> str:
        conn = await asyncpg.connect(pg_uri(catalog), timeout=timeout)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        raise CatalogUnavailable(f"catalog {redact(catalog)} does not answer: "
                                 f"{type(e).__name__}: {e}") from e


def pg_uri(catalog: str) -> str:
    """The catalog as a postgresql:// URI (libpq's key=value form converted)."""
    if "://" in catalog:
        return catalog
    parts = dict(kv.split("=", 1) for kv in catalog.split())
    host = parts.pop("host", "")
    user = parts.pop("user", "")
    pw = parts.pop("password", "")
    port = parts.pop("port", "")
    db = parts.pop("dbname", "")
    auth = f"{user}{':' + pw if pw else ''}@" if user else ""
    query = "&".join(f"{k}={v}" for k, v in parts.items())
    if host.startswith("/"):
        query = f"host={host}" + (f"&{query}" if query else "")
        host = ""
    port_part = f":{port}" if port and host else ""
    if port and not host:
        query += f"&port={port}"
    return f"postgresql://{auth}{host}{port_part}/{db}" + (f"?{query}" if query else "")


# --- the cursor ---------------------------------------------------------------------------

_UPDATE_RET = re.compile(
    r"^\s*UPDATE\s+(?P<table>\w+)(?:\s+AS\s+(?P<alias>\w+))?\s+SET\s+(?P<set>.*?)"
    r"(?:\s+FROM\s+(?P<from>.*?))?\s+WHERE\s+(?P<where>.*)\s+RETURNING\s+(?P<ret>.*?)\s*$",
    re.DOTALL | re.IGNORECASE)
_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<table>\w+)\s*\((?P<cols>[^)]*)\)\s*(?P<body>.*?)"
    r"(?:\s+RETURNING\s+(?P<ret>[^)]*?))?\s*$", re.DOTALL | re.IGNORECASE)
_counter = iter(range(1 << 62))
_FRAME_NAME = re.compile(r"\b(_af_\w+)\b")


def is_conflict(e: BaseException | None) -> bool:
    """A lost optimistic commit (DuckLake's or DuckDB's own)."""
    return isinstance(e, (duckdb.TransactionException, WriteConflict)) and (
        "conflict" in str(e).lower())


def backoff(attempt: int) -> None:
    """Sleep before retry `attempt` (exponential, jittered, at most 2 s)."""
    time.sleep(min(2.0, 0.01 * 2 ** attempt) * (0.5 + random.random()))


class LakeCursor:
    """A DuckDB cursor on the lake that gives the store what DuckLake lacks: RETURNING on
    INSERT/UPDATE, the write lock around writes, and retries of statements that lost a
    conflict outside a transaction. Everything else is passed through."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, lock: WriteLock) -> None:
        self._cur = cur
        self._lock = lock
        self._in_txn = False
        self._held: Any = None  # the write lock's context while a transaction holds it
        self._rows: list[tuple[Any, ...]] | None = None
        self._desc: list[tuple[Any, ...]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    # results of an emulated RETURNING (else the cursor's own)
    @property
    def description(self) -> Any:
        return self._desc if self._rows is not None else self._cur.description

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._rows is not None:
            rows, self._rows = self._rows, []
            return rows
        return self._cur.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._rows is not None:
            return self._rows.pop(0) if self._rows else None
        return self._cur.fetchone()

    def execute(self, sql: str, params: Any = None) -> LakeCursor:
        self._rows = self._desc = None
        # DuckDB's replacement scans (`FROM _af_frame`) see only the calling frame's
        # variables; the store's frames (named _af_*) are registered for this statement.
        names = set(_FRAME_NAME.findall(sql))
        if names:
            caller = sys._getframe(1).f_locals
            names = {n for n in names if n in caller}
            for n in names:
                self._cur.register(n, caller[n])
        try:
            out = self._execute(sql, params)
            if names and self._rows is None and self._cur.description:
                # A query's result is read lazily: fetched after the frames are unregistered
                # it would be empty. Read it now (store/snapshots.add_tags' lookup).
                self._desc = self._cur.description
                self._rows = self._cur.fetchall()
            return out
        finally:
            for n in names:
                self._cur.unregister(n)

    def _execute(self, sql: str, params: Any) -> LakeCursor:
        word = sql.lstrip()[:10].upper()
        if word.startswith(("BEGIN", "START")):
            self._held = self._lock.held()
            self._held.__enter__()
            try:
                self._raw(sql, params)
            except BaseException:
                self._release()
                raise
            self._in_txn = True
            return self
        if word.startswith(("COMMIT", "ROLLBACK", "ABORT", "END")):
            self._in_txn = False
            try:
                self._raw(sql, params)
            finally:
                self._release()
            return self
        m_upd = _UPDATE_RET.match(sql)
        m_ins = _INSERT.match(sql) if word.startswith("INSERT") else None
        special = m_upd is not None or (m_ins is not None and bool(
            m_ins["ret"] or m_ins["table"].lower() in KEYED))
        if self._in_txn:  # the caller's transaction retries as a whole, if it does
            if special and word.startswith(_WRITE_WORDS):
                return self._special(m_upd, m_ins, sql, params)
            return self._raw(sql, params)
        # On its own: retried when it lost a conflict or the catalog was away (a read, or a
        # write that did not commit, can run again).
        if not word.startswith(_WRITE_WORDS):
            return retry(lambda: self._raw(sql, params))  # type: ignore[no-any-return]
        return retry(  # type: ignore[no-any-return]
            lambda: self._autocommit(m_upd, m_ins, special, sql, params))

    def _autocommit(self, m_upd: re.Match[str] | None, m_ins: re.Match[str] | None,
                    special: bool, sql: str, params: Any) -> LakeCursor:
        if m_upd is not None and not self._update_ids(m_upd, params):
            # Nothing to move (an idle worker polling): no lock, no transaction; the same
            # as losing the race to whoever moved the rows first.
            self._desc, self._rows = self._cur.execute(
                f"SELECT {self._ret(m_upd)} FROM {m_upd['table']} LIMIT 0").description, []
            return self
        with self._lock.held():
            if not special:
                return self._raw(sql, params)
            self._raw("BEGIN")
            try:
                self._special(m_upd, m_ins, sql, params)
                rows, desc = self._rows, self._desc
                if rows is None:  # the statement's own result (an INSERT's count)
                    desc = self._cur.description
                    rows = self._cur.fetchall() if desc else []
                self._raw("COMMIT")
                self._rows, self._desc = rows, desc
                return self
            except BaseException:
                try:
                    self._cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)

    def _raw(self, sql: str, params: Any = None) -> LakeCursor:
        if params is None:
            self._cur.execute(sql)
        else:
            self._cur.execute(sql, params)
        return self

    def _special(self, m_upd: re.Match[str] | None, m_ins: re.Match[str] | None, sql: str,
                 params: Any) -> LakeCursor:
        if m_upd is not None:
            return self._update_returning(m_upd, params)
        assert m_ins is not None
        return self._insert(m_ins, sql, params)

    @staticmethod
    def _split(m: re.Match[str], params: Any) -> tuple[list[Any], list[Any], list[Any]]:
        params = list(params or [])
        n_set = m["set"].count("?")
        n_from = (m["from"] or "").count("?")
        return params[:n_set], params[n_set:n_set + n_from], params[n_set + n_from:]

    @staticmethod
    def _ret(m: re.Match[str]) -> str:
        return re.sub(rf"\b{m['alias']}\.", "", m["ret"]) if m["alias"] else m["ret"]

    def _update_ids(self, m: re.Match[str], params: Any) -> list[str]:
        """Ids of the rows the UPDATE would change (in this transaction's view)."""
        _, from_p, where_p = self._split(m, params)
        table, alias = m["table"], m["alias"] or m["table"]
        src = f"{table} AS {alias}" + (f", {m['from']}" if m["from"] else "")
        return [r[0] for r in self._cur.execute(
            f"SELECT DISTINCT {alias}.id FROM {src} WHERE {m['where']}",
            [*from_p, *where_p]).fetchall()]

    def _update_returning(self, m: re.Match[str], params: Any) -> LakeCursor:
        set_p, from_p, where_p = self._split(m, params)
        table, alias = m["table"], m["alias"] or m["table"]
        ids = self._update_ids(m, params)
        if ids:
            # The WHERE is evaluated once, by the select above: the UPDATE takes those ids,
            # not the WHERE again. Evaluating it twice may pick other rows: a claim's
            # `ORDER BY depth, created_at LIMIT n` over ties (the URLs discovered by one
            # batch of the recorder share its transaction's now(), one INSERT per snapshot)
            # picks any n of them, and inside the UPDATE DuckDB scanned the lake's files in
            # another order than the select did; the rows read back then included some this
            # statement never moved (a snapshot claimed twice; tests/distributed).
            # Nothing else writes in between: the same transaction, under the write lock.
            # With a FROM, its join is needed for the SET, so the WHERE stays (the store's
            # such statements are plain joins, the same on every evaluation).
            head = f"UPDATE {table}" + (f" AS {m['alias']}" if m["alias"] else "")
            if m["from"]:
                res = self._cur.execute(
                    f"{head} SET {m['set']} FROM {m['from']} WHERE ({m['where']}) "
                    f"AND {alias}.id IN (SELECT unnest(?::VARCHAR[]))",
                    [*set_p, *from_p, *where_p, ids])
            else:
                res = self._cur.execute(
                    f"{head} SET {m['set']} WHERE {alias}.id IN (SELECT unnest(?::VARCHAR[]))",
                    [*set_p, ids])
            counted = res.fetchone()
            if counted is not None and counted[0] < len(ids):
                # Some selected row did not move (cannot happen in one transaction): what
                # would be read back is not what this statement changed. Loudly, never
                # returned; the caller's transaction (or this statement's) rolls back.
                raise StoreError(f"shared index: UPDATE {table} … RETURNING moved "
                                 f"{counted[0]} of the {len(ids)} rows it selected")
        res = self._cur.execute(
            f"SELECT {self._ret(m)} FROM {table} WHERE id IN (SELECT unnest(?::VARCHAR[]))",
            [ids])
        self._desc = res.description
        self._rows = res.fetchall()
        return self

    def _insert(self, m: re.Match[str], sql: str, params: Any) -> LakeCursor:
        table = m["table"]
        if table.lower() in KEYED:
            self._cur.execute("UPDATE lake_lock SET n = n + 1")
        if not m["ret"]:
            return self._raw(sql, params)
        cols = [c.strip() for c in m["cols"].split(",")]
        tmp = f"_af_ins_{os.getpid()}_{next(_counter)}"
        body = m["body"].strip()
        if body.upper().startswith("VALUES"):
            body = f"SELECT * FROM ({body})"
        self._cur.execute(
            f"CREATE TEMP TABLE {tmp} AS SELECT * FROM ({body}) _s({', '.join(cols)})", params)
        try:
            self._cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) "
                              f"SELECT {', '.join(cols)} FROM {tmp}")
            ret = m["ret"].strip()
            if ret == "*" or not {c.strip() for c in ret.split(",")} <= set(cols):
                res = self._cur.execute(f"SELECT {ret} FROM {table} WHERE id IN "
                                        f"(SELECT id FROM {tmp})")
            else:
                res = self._cur.execute(f"SELECT {ret} FROM {tmp}")
            self._desc = res.description
            self._rows = res.fetchall()
        finally:
            self._cur.execute(f"DROP TABLE IF EXISTS {tmp}")
        return self


def retry(fn: Callable[[], Any], attempts: int = RETRIES, wait: float | None = None) -> Any:
    """Call fn again while it loses conflicts (up to `attempts`, jittered backoff) or the
    catalog does not answer (for up to `wait` s, default CATALOG_WAIT: a restart of
    PostgreSQL); any other error is raised at once."""
    deadline = time.monotonic() + (CATALOG_WAIT if wait is None else wait)
    conflicts = 0
    while True:
        try:
            return fn()
        except (duckdb.Error, StoreError) as e:
            if is_conflict(e) or is_conflict(e.__cause__):
                conflicts += 1
                if conflicts >= attempts:
                    raise
                backoff(conflicts)
            elif catalog_down(e) and time.monotonic() < deadline:
                time.sleep(0.5)
            else:
                raise


_CATALOG_DOWN: Final[tuple[str, ...]] = (
    "unable to connect to postgres", "server closed the connection", "terminating connection",
    "connection refused", "no connection to the server", "could not connect",
    "connection to server", "ssl connection has been closed", "the database system is",
    # DuckLake's commit failed and so did its ROLLBACK on the catalog: the connection is
    # gone (seen once in test_workers when PostgreSQL was killed during a batch's commit)
    'failed to execute query "rollback"',
)


def catalog_down(e: BaseException | None) -> bool:
    """The catalog (PostgreSQL) did not answer: down, restarting, or the connection lost."""
    while e is not None:
        if isinstance(e, CatalogUnavailable):
            return True
        if isinstance(e, duckdb.Error) and any(p in str(e).lower() for p in _CATALOG_DOWN):
            return True
        e = e.__cause__
    return False

