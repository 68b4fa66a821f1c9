"""Reading the index while another process writes it.

DuckDB lets one process open a file read-write and then no other process may open it at
all, not even read-only. So the writer serves reads: every process holding the index
read-write runs a QueryServer on an abstract unix socket named after the index path; a
reader first tries to open the file read-only and, if it is locked, sends its query to the
server instead. Results travel as Arrow IPC, so types survive. Statements that change data
are refused unless the caller asks for write access.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc
from archiveflow.store.db import Store, map_errors
from archiveflow.store.errors import IndexLocked, StoreError

_READ_ONLY_TYPES: Final[frozenset[str]] = frozenset(
    {"SELECT", "EXPLAIN", "PRAGMA", "SHOW", "DESCRIBE", "SUMMARIZE", "SET", "VARIABLE_SET"}
)


class QueryError(StoreError):
    """A query that failed or was refused; the message says why."""


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


def socket_name(index_path: Path) -> str:
    """The abstract socket name of the index at `index_path`."""
    digest = hashlib.sha256(str(index_path.resolve()).encode()).hexdigest()[:24]
    return f"\0archiveflow-{digest}"


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryError if any statement in `sql` could change data."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"SQL error: {str(e).splitlines()[0]}") from e
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1].upper()
        if kind not in _READ_ONLY_TYPES:
            raise QueryError(f"{kind} statements change the index; add --write to allow them")


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None) -> pa.Table:
    try:
        statements = con.extract_statements(sql)
        if not statements:
            raise QueryError("empty query")
        for st in statements[:-1]:
            con.execute(st)
        res = con.execute(statements[-1], params) if params else con.execute(statements[-1])
        if res.description is None:
            return pa.table({"ok": [True]})
        return res.to_arrow_table()
    except duckdb.Error as e:
        raise QueryError(f"SQL error: {str(e).splitlines()[0]}") from e


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!Q", len(payload)) + payload)


def _recv(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            raise ConnectionError("index server closed the connection")
        head += chunk
    (n,) = struct.unpack("!Q", head)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("index server closed the connection")
        buf += chunk
    return bytes(buf)


class QueryServer:
    """Serves queries on the writer's connection to other processes (one thread each)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = socket_name(store.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.name)
        self._sock.listen(16)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="archiveflow-query-server",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                req = json.loads(_recv(conn))
                cur = self.store.cursor()
                if not req.get("write"):
                    check_read_only(cur, req["sql"])
                table = _run(cur, req["sql"], req.get("params"))
                sink = io.BytesIO()
                with ipc.new_stream(sink, table.schema) as w:
                    w.write_table(table)
                _send(conn, b"A" + sink.getvalue())
            except Exception as e:  # noqa: BLE001 - reported to the client
                _send(conn, b"E" + str(e).encode())

    def close(self) -> None:
        """Stop accepting queries."""
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


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
            with map_errors(index_path):
                self._con = duckdb.connect(str(index_path), read_only=not write)
        except IndexLocked:
            self.via_writer = True

    def query(self, sql: str, params: list[Any] | None = None, *, write: bool = False
              ) -> Result:
        """Run `sql` (the last statement's rows are returned)."""
        if self._con is not None:
            if write and not self.write:
                raise QueryError("this reader was opened read-only; open it with write=True")
            if not write:
                check_read_only(self._con, sql)
            return Result(_run(self._con, sql, params))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(socket_name(self.index_path))
            except OSError as e:
                raise QueryError(
                    f"index {self.index_path} is locked by a process that serves no queries "
                    "(an older archiveflow?); wait for it to finish") from e
            _send(s, json.dumps({"sql": sql, "params": params, "write": write}).encode())
            reply = _recv(s)
        if reply[:1] == b"E":
            raise QueryError(reply[1:].decode(errors="replace"))
        return Result(ipc.open_stream(reply[1:]).read_all())

    def close(self) -> None:
        """Release the read-only connection."""
        if self._con is not None:
            self._con.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
