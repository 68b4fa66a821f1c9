"""Reading the index while another process writes it.

DuckDB lets one process open a file read-write, and then no other process may open it at
all, not even read-only. So the writer serves reads: every process holding the index
read-write (a crawl, `serve`) runs a QueryServer on the index's read socket
(store/readsock.py: a 0600 file beside the index, uid checked on both ends). A Reader first
opens the file itself, read-only; if a writer holds it, it sends its query to the socket.
Results travel as Arrow IPC, so types survive.

The server serves reads only: a request cannot ask for write access (`sql --write` during a
crawl is refused by the client, with what to do). What "read-only" is enforced by, in each
mode, is in store/readonly.py. The one non-SQL request is `search`, whose catch-up and FTS
rebuild are the server's own code (store/search.py), with only the search's words and
filters taken from the request.

Bounded: one accept thread and `workers` threads serve at most `max_connections` open
connections (more are told "busy"); a connection that has not sent its whole request within
`idle_timeout` seconds is closed, quietly. Other accounts are refused at accept, before they
cost a thread.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb

from archiveflow.store import readonly, readsock
from archiveflow.store.db import Store, map_errors
from archiveflow.store.errors import IndexLocked, StoreError
from archiveflow.store.readonly import QueryError

if TYPE_CHECKING:  # imported where a table is read or sent: not when `add` opens the index
    import pyarrow as pa

__all__ = ["AlreadyServing", "QueryError", "QueryServer", "Reader", "Result", "WriteRefused"]

IDLE_TIMEOUT: Final[float] = 10.0  # seconds a connection may take to send its request
MAX_CONNECTIONS: Final[int] = 32  # open connections at once (queued ones included)
WORKERS: Final[int] = 4  # threads answering queries
MAX_REQUEST: Final[int] = 16 << 20  # bytes of one request (SQL text and parameters)
_HEAD = struct.Struct("!Q")


class AlreadyServing(OSError):  # noqa: N818 - an OSError, as tasks/runtime.py expects
    """This process already serves the index (a second Runtime on the same data folder)."""


class WriteRefused(QueryError):
    """Write access asked for while another process holds the index."""


@dataclass
class Result:
    """A query result: column names, rows, and the Arrow table behind them."""

    table: pa.Table

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        cols = [c.to_pylist() for c in self.table.columns]
        return list(zip(*cols, strict=True)) if cols else []


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEAD.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete request in time")
            sock.settimeout(left)
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket, *, deadline: float | None = None, limit: int | None = None
          ) -> bytes:
    (n,) = _HEAD.unpack(_recv_exact(sock, _HEAD.size, deadline))
    if limit is not None and n > limit:
        raise ValueError(f"request of {n} bytes is over the limit of {limit}")
    return _recv_exact(sock, n, deadline)


def _arrow_bytes(table: pa.Table) -> bytes:
    import pyarrow.ipc as ipc

    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


_serving_lock = threading.Lock()
_serving: set[Path] = set()


class QueryServer:
    """Serves read-only queries on the writer's index to the owner's other processes."""

    def __init__(self, store: Store, *, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, workers: int = WORKERS,
                 ops: Mapping[str, Callable[[Store, dict[str, Any]], Any]] | None = None
                 ) -> None:
        self.store = store
        # Fixed server-side operations besides read-only SQL (e.g. "search": the crawl
        # indexes pending text, then ranks), given by whoever starts the server, so this
        # module needs none of them.
        self.ops = dict(ops or {})
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.path = readsock.socket_path(store.path)
        self.refused = 0  # connections turned away (another uid, or busy)
        self._uid = os.geteuid()
        with _serving_lock:
            if self.path in _serving:
                raise AlreadyServing(f"this process already serves {store.path} on {self.path}")
            self._sock = readsock.listen(self.path)
            _serving.add(self.path)
        self._inode = os.stat(self.path).st_ino
        self._closed = False
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="archiveflow-query")
        self._thread = threading.Thread(target=self._loop, name="archiveflow-query-accept",
                                        daemon=True)
        self._thread.start()

    def _refuse(self, conn: socket.socket, why: str) -> None:
        self.refused += 1
        with conn:
            conn.settimeout(0.5)
            try:
                _send(conn, b"E" + why.encode())
                conn.shutdown(socket.SHUT_WR)
                # Closing with the peer's request unread resets the connection and loses
                # the reply; drop what already arrived (without waiting for more).
                conn.setblocking(False)
                for _ in range(16):
                    if not conn.recv(65536):
                        break
            except OSError:
                pass

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.1)  # e.g. out of file descriptors: keep serving the others
                continue
            try:
                peer = readsock.peer_of(conn)
            except OSError:
                conn.close()
                continue
            if peer.uid != self._uid:
                self._refuse(conn, f"refused: uid {peer.uid} may not read this index; only "
                                   f"its owner (uid {self._uid}) may")
                continue
            if not self._slots.acquire(blocking=False):
                self._refuse(conn, f"busy: {self.max_connections} connections are open; "
                                   "try again in a moment")
                continue
            try:
                self._pool.submit(self._serve, conn)
            except RuntimeError:  # the pool was shut down: we are closing
                self._slots.release()
                conn.close()
                return

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                try:
                    raw = _recv(conn, deadline=time.monotonic() + self.idle_timeout,
                                limit=MAX_REQUEST)
                except (OSError, ValueError):  # idle, gone or oversized: nothing to answer
                    return
                try:
                    payload = b"A" + _arrow_bytes(self._answer(json.loads(raw)))
                except StoreError as e:
                    payload = b"E" + str(e).encode()
                except Exception as e:  # noqa: BLE001 - reported to the client, one line
                    payload = b"E" + f"query failed: {type(e).__name__}: {e}".encode()
                conn.settimeout(self.idle_timeout)
                try:
                    _send(conn, payload)
                except OSError:
                    return
        finally:
            self._slots.release()

    def _answer(self, req: Any) -> pa.Table:
        if not isinstance(req, dict):
            raise QueryError("malformed request")
        if req.get("write"):
            raise WriteRefused("the running crawl serves reads only; run it with --write when "
                               "no crawl runs")
        op = req.get("op", "query")
        if op == "query":
            sql, params = req.get("sql"), req.get("params")
            if not isinstance(sql, str) or not (params is None or isinstance(params, list)):
                raise QueryError("malformed request: sql must be text, params a list")
            return readonly.run_read_only(self.store.cursor(), sql, params)
        if op in self.ops:
            return self.ops[op](self.store, req)
        raise QueryError(f"unknown request {op!r}")

    def close(self) -> None:
        """Stop accepting queries and remove the socket file (if it is still ours)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        # Wait for queries in flight: the index connection is closed next, and DuckDB aborts
        # the process (std::terminate) when a cursor is mid-query as its database goes away.
        # A silent client holds a worker for at most its idle timeout.
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass
        with _serving_lock:
            _serving.discard(self.path)


def _holder(e: IndexLocked) -> str:
    return str(getattr(e, "holder", "") or "another process")


class Reader:
    """Query the index: directly when no one writes it, else through the writer."""

    def __init__(self, index_path: Path, *, write: bool = False) -> None:
        self.index_path = index_path
        self.write = write
        self._con: duckdb.DuckDBPyConnection | None = None
        self.via_writer = False
        if not index_path.exists():
            raise StoreError(f"no index at {index_path}: archive something first "
                             "(archiveflow add URL)")
        try:
            if write:
                with map_errors(index_path):
                    self._con = duckdb.connect(str(index_path))
            else:
                self._con = readonly.open_read_only(index_path)
        except (IndexLocked, duckdb.ConnectionException) as e:
            # ConnectionException: this very process holds the index with other settings.
            if write:
                who = _holder(e) if isinstance(e, IndexLocked) else "this process"
                raise WriteRefused(
                    f"index {index_path} is held by {who} (a running crawl): --write needs it "
                    "to itself; wait for the crawl to finish or stop it, then run again") from e
            self.via_writer = True

    def _request(self, req: dict[str, Any]) -> pa.Table:
        path = readsock.socket_path(self.index_path)
        with readsock.connect(path, self.index_path) as s:
            _send(s, json.dumps(req, default=str).encode())
            try:
                reply = _recv(s)
            except ConnectionError as e:
                raise QueryError(f"the index server on {path} closed the connection without "
                                 "an answer; try again") from e
        if reply[:1] == b"E":
            raise QueryError(reply[1:].decode(errors="replace"))
        import pyarrow.ipc as ipc

        return ipc.open_stream(reply[1:]).read_all()

    def query(self, sql: str, params: list[Any] | None = None, *, write: bool = False
              ) -> Result:
        """Run `sql` (the last statement's rows are returned); read-only unless `write`."""
        if write and not self.write:
            raise QueryError("this reader was opened read-only; open it with write=True")
        if self._con is not None:
            run = readonly.run_any if write else readonly.run_read_only
            return Result(run(self._con, sql, params))
        return Result(self._request({"op": "query", "sql": sql, "params": params}))

    def search_table(self, query: dict[str, Any], *, rebuild: bool = False) -> pa.Table:
        """Ask the writer to run a ranked search (store/search.py) and return its rows."""
        if self._con is not None:
            raise QueryError("search_table is for a reader through the writer")
        return self._request({"op": "search", "query": query, "rebuild": rebuild})

    def close(self) -> None:
        """Release the direct connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
