"""One DuckDB connection per process, a cursor per thread, migrations and error mapping."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb

from archiveflow.settings import settings
from archiveflow.store.errors import IndexLocked, SchemaTooNew, StoreError, WriteConflict

T = TypeVar("T")

# (version, file in this package). A new schema version appends a migration file whose
# statements turn version N-1 into N; schema.sql stays the idempotent base.
MIGRATIONS: Final[list[tuple[int, str]]] = [(1, "schema.sql")]
SCHEMA_VERSION: Final[int] = MIGRATIONS[-1][0]

_LOCK_PID = re.compile(r"PID (\d+)")
# Whether this process opened the shared index (retry_conflicts waits longer then), kept
# here so that the embedded path never reads the settings for it.
_shared_opened = False


def _sql_file(name: str) -> str:
    return resources.files("archiveflow.store").joinpath(name).read_text(encoding="utf-8")


@contextmanager
def map_errors(path: Path | str = "") -> Iterator[None]:
    """Turn raw duckdb errors into the store's error classes."""
    try:
        yield
    except duckdb.IOException as e:
        msg = str(e)
        if "lock" in msg.lower():
            m = _LOCK_PID.search(msg)
            who = f"process {m.group(1)}" if m else "another process"
            err = IndexLocked(
                f"index {path} is in use by {who}; wait for it to finish "
                f"or use `archiveflow sql`/`status`, which read through it"
            )
            err.holder = who  # type: ignore[attr-defined]  # for messages of callers
            raise err from e
        raise StoreError(f"index {path}: {msg.splitlines()[0]}") from e
    except duckdb.TransactionException as e:
        if "conflict" in str(e).lower():
            raise WriteConflict(str(e).splitlines()[0]) from e
        raise


def _connect_config() -> dict[str, Any]:
    """DuckDB settings of the index connection: ARCHIVEFLOW_DUCKDB_THREADS (default: DuckDB's)."""
    threads = settings().duckdb_threads
    return {"threads": threads} if threads else {}


class Store:
    """The index of one data folder.

    One duckdb connection per process (DuckDB allows one read-write opener per file);
    each thread gets its own cursor from it, as DuckDB requires.

    With `catalog` (default: ARCHIVEFLOW_CATALOG) the index is the shared DuckLake instead
    of the file at `path` (store/lake.py): `shared` is True, cursors are lake cursors, and
    many processes on many machines write and read it at once.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        wait_for_lock: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
        catalog: str | None = None,
        storage: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        cfg = settings()
        self.catalog = catalog if catalog is not None else cfg.catalog
        self.shared = bool(self.catalog)
        self._lock: Any = None
        if self.shared:
            global _shared_opened
            _shared_opened = True
            from archiveflow.store import lake

            self.storage = storage or cfg.storage or self.path.parent / "lake"
            self._lock = lake.WriteLock(str(self.catalog))
            # Under the write lock: two processes creating a new catalog at once collide in
            # PostgreSQL ("duplicate key value violates unique constraint").
            with self._lock.held():
                self._con = lake.connect(str(self.catalog), self.storage, _connect_config(),
                                         explicit=bool(storage or cfg.storage))
        else:
            self._con = self._connect(wait_for_lock, on_wait)
        self._con.execute("SET TimeZone = 'UTC'")
        if self.shared and not read_only:
            from archiveflow.store import lake

            lake.retry(self._migrate)
        elif not read_only:
            self._migrate()

    @property
    def where(self) -> str:
        """The index, for messages: its file, or the shared catalog (password hidden)."""
        if self.shared:
            from archiveflow.store.lake import redact

            return f"shared index {redact(str(self.catalog))} (data files {self.storage})"
        return str(self.path)

    def _connect(
        self, wait_for_lock: float, on_wait: Callable[[str], None] | None
    ) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + wait_for_lock
        told = False
        while True:
            try:
                with map_errors(self.path):
                    return duckdb.connect(str(self.path), read_only=self.read_only,
                                          config=_connect_config())
            except IndexLocked as e:
                if time.monotonic() >= deadline:
                    raise
                if on_wait and not told:
                    on_wait(f"{e}; waiting up to {wait_for_lock:.0f}s for it")
                    told = True
                time.sleep(0.5)

    def _migrate(self) -> None:
        con: Any = self._con
        if self.shared:
            con = self.cursor()  # the lake's cursor: the write lock, no constraints
            con.execute("CREATE TABLE IF NOT EXISTS schema_version "
                        "(version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        else:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        current = (row[0] if row else None) or 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"index {self.path} has schema version {current}, this archiveflow knows "
                f"up to {SCHEMA_VERSION}; upgrade archiveflow"
            )
        for version, name in MIGRATIONS:
            if version <= current:
                continue
            con.execute("BEGIN")
            if self.shared:
                from archiveflow.store.lake import lake_schema

                con.execute(lake_schema(_sql_file(name)))
            else:
                con.execute(_sql_file(name))
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        # Views are derived: replaced whenever views.sql changed (≈0.5 s to run it, so not
        # on every open), identified by the file's hash.
        views = resources.files("archiveflow.store").joinpath("views.sql")
        if views.is_file():
            text = views.read_text(encoding="utf-8")
            digest = hashlib.sha256(text.encode()).hexdigest()
            con.execute("CREATE TABLE IF NOT EXISTS views_version (sha256 VARCHAR NOT NULL)")
            row = con.execute("SELECT sha256 FROM views_version").fetchone()
            if row is None or row[0] != digest:
                con.execute("BEGIN")
                con.execute(text)
                con.execute("DELETE FROM views_version")
                con.execute("INSERT INTO views_version VALUES (?)", [digest])
                con.execute("COMMIT")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (created on first use)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            if self.shared:
                from archiveflow.store.lake import LAKE, LakeCursor, retry

                # A cursor starts in the in-memory database; USE asks the catalog (retried
                # while it restarts).
                raw = cur
                retry(lambda: raw.execute(f"USE {LAKE}"))
                cur = LakeCursor(raw, self._lock)
            self._local.cur = cur
        return cur  # type: ignore[return-value]  # a LakeCursor passes for one

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN … COMMIT on this thread's cursor; ROLLBACK on any error."""
        cur = self.cursor()
        with map_errors(self.path):
            cur.execute("BEGIN")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise

    def execute(self, sql: str, params: list | dict | None = None) -> duckdb.DuckDBPyConnection:
        """Run one statement on this thread's cursor, errors mapped."""
        with map_errors(self.path):
            return self.cursor().execute(sql, params) if params is not None else (
                self.cursor().execute(sql)
            )

    def close(self) -> None:
        """Close the connection (every thread's cursor with it)."""
        try:
            self._con.close()
        except duckdb.Error:
            pass
        if self._lock is not None:
            self._lock.close()


def is_shared(cur: Any) -> bool:
    """True when `cur` is a cursor on the shared index (store/lake.py)."""
    return type(cur).__name__ == "LakeCursor"


def retry_conflicts(fn: Callable[[], T], attempts: int = 8, delay: float = 0.005) -> T:
    """Call fn, retrying on WriteConflict with a short backoff (longer with the shared
    index, whose writers are other processes)."""
    if _shared_opened:
        from archiveflow.store.lake import retry

        return retry(fn)  # type: ignore[no-any-return]
    for i in range(attempts):
        try:
            return fn()
        except WriteConflict:
            if i == attempts - 1:
                raise
            time.sleep(delay * (2**i))
    raise AssertionError("unreachable")
