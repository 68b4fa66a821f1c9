"""The read socket (store/reader.py, store/readsock.py): only the owner talks to it.

Issue rows "read socket" and "socket name": a socket file of mode 0600 in the data folder,
uid checked on both ends, a squatter makes the crawl fail loudly, stale files are replaced,
idle connections time out and their number (and the server's threads) is bounded.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiveflow.store import readsock
from archiveflow.store.db import Store
from archiveflow.store.reader import QueryServer, Reader
from tests.security.readpath import (
    archiveflow,
    as_other,
    need_other_uid,
    other_uid,
    raw_request,
    run_raw_client_as_other,
    shared_folder,
)

SQUATTER = r"""
import os, socket, struct, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o666)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    with open(log, "ab") as f:
        f.write(data)
    forged = b"E" + b"forged answer"
    try:
        c.sendall(struct.pack("!Q", len(forged)) + forged)
    except OSError:
        pass
    c.close()
"""


def _assert_refused(reply: str) -> None:
    # The server answers "refused" and closes; if the client's request reaches it after it
    # dropped what had arrived, the kernel resets the connection instead: refused either way.
    if reply != "IO-ERROR ConnectionResetError":
        assert reply.startswith("REPLY E refused: uid"), reply
        assert str(other_uid()) in reply


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Store, QueryServer]]:
    """A writer holding an index and serving it, in this process."""
    store = Store(tmp_path / "index.duckdb")
    server = QueryServer(store)
    try:
        yield store, server
    finally:
        server.close()
        store.close()


def _squatter(path: Path, log: Path, *, other: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", SQUATTER, str(path), str(log)]
    proc = subprocess.Popen(as_other(cmd) if other else cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_socket_is_a_private_file_beside_the_index(served: tuple[Store, QueryServer]) -> None:
    store, server = served
    path = server.path
    assert path == store.path.parent / "index.sock"
    st = path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    with Reader(store.path) as reader:  # this process holds the index: reads go through it
        assert reader.via_writer
        assert reader.query("SELECT count(*) FROM snapshot").rows == [(0,)]
    server.close()
    assert not path.exists()  # removed on close, so the next start finds no stale file


def test_another_account_cannot_connect_and_is_refused_by_uid(tmp_path: Path) -> None:
    need_other_uid()
    with shared_folder(0o755) as data:
        store = Store(data / "index.duckdb")
        server = QueryServer(store)
        try:
            attack = {"op": "query", "write": True,
                      "sql": "SELECT content FROM read_text('/etc/shadow')"}
            # Mode 0600: the file system keeps nobody out before our check is reached.
            assert run_raw_client_as_other(server.path, attack) == \
                "CONNECT-ERROR PermissionError"
            # Were the mode lost (a careless chmod), SO_PEERCRED still refuses the uid.
            server.path.chmod(0o666)
            reply = run_raw_client_as_other(server.path, attack)
            _assert_refused(reply)
            assert "shadow" not in reply
            update = {"op": "query", "write": True,
                      "sql": "CREATE TABLE pwned AS SELECT 1 AS x"}
            _assert_refused(run_raw_client_as_other(server.path, update))
            assert server.refused == 2
            with Reader(store.path) as reader:
                assert reader.query("SELECT count(*) FROM duckdb_tables() "
                                    "WHERE table_name = 'pwned'").rows == [(0,)]
            # The CLI as that account: refused too, in one line, with nothing read.
            proc = archiveflow(data, "sql", "SELECT count(*) FROM snapshot", other=True)
            assert proc.returncode != 0
            assert proc.stderr.strip().count("\n") == 0, proc.stderr
            # The owner still reads through the same socket.
            with Reader(store.path) as reader:
                assert reader.query("SELECT count(*) FROM snapshot").rows == [(0,)]
        finally:
            server.close()
            store.close()


def test_squatter_on_the_socket_path_makes_the_crawl_fail_loudly(
        site_url: str, prefect_api: str) -> None:
    need_other_uid()
    with shared_folder(0o1777) as data:  # a folder others may create files in
        log = data.parent / "squatter.log"
        log.touch()
        log.chmod(0o666)
        squatter = _squatter(data / "index.sock", log, other=True)
        try:
            proc = archiveflow(data, "add", "--allow-private", "--plugins", "title",
                               f"{site_url}/index.html")
            assert proc.returncode != 0, proc.stdout
            err = proc.stderr
            assert f"already answered by process {squatter.pid}" in err
            assert f"(uid {other_uid()})" in err
            assert "queued" not in err  # no crawl was created to run without a server
            # root's own `sql` does not go to the impostor either (nothing holds the index:
            # it is read directly), and nothing was sent to it.
            proc = archiveflow(data, "sql", "SELECT count(*) AS n FROM crawl")
            assert proc.returncode == 0, proc.stderr
            assert log.read_bytes() == b""
        finally:
            squatter.kill()
            squatter.wait()


def test_client_refuses_a_server_of_another_uid() -> None:
    need_other_uid()
    with shared_folder(0o1777) as data:
        log = data.parent / "impostor.log"
        log.touch()
        log.chmod(0o666)
        store = Store(data / "index.duckdb")  # holds the index, serves nothing
        impostor = _squatter(data / "index.sock", log, other=True)
        try:
            proc = archiveflow(data, "sql", "SELECT count(*) FROM snapshot")
            assert proc.returncode != 0
            assert "refusing the index server" in proc.stderr
            assert f"runs as uid {other_uid()}" in proc.stderr
            assert "forged" not in proc.stdout + proc.stderr
            assert log.read_bytes() == b""  # the query never left this account
        finally:
            impostor.kill()
            impostor.wait()
            store.close()


def test_squatter_of_the_same_account_is_an_error_at_start(tmp_path: Path) -> None:
    log = tmp_path / "squatter.log"
    squatter = _squatter(tmp_path / "index.sock", log, other=False)
    store = Store(tmp_path / "index.duckdb")
    try:
        with pytest.raises(readsock.SocketInUse, match=f"process {squatter.pid}"):
            QueryServer(store)
    finally:
        squatter.kill()
        squatter.wait()
        store.close()


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "index.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound and closed without unlink: what a killed crawl leaves
    dead.close()
    store = Store(tmp_path / "index.duckdb")
    server = QueryServer(store)
    try:
        with Reader(store.path) as reader:
            assert reader.query("SELECT 42 AS answer").rows == [(42,)]
    finally:
        server.close()
        store.close()


def test_a_non_socket_at_the_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "index.sock").write_text("not a socket")
    store = Store(tmp_path / "index.duckdb")
    try:
        with pytest.raises(readsock.SocketError, match="exists and is not a socket"):
            QueryServer(store)
    finally:
        store.close()


def test_idle_connections_time_out_and_their_number_is_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path / "index.duckdb")
    before = threading.active_count()
    server = QueryServer(store, idle_timeout=0.5, max_connections=8, workers=2)
    idle: list[socket.socket] = []
    try:
        for _ in range(200):  # connect and send nothing
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(server.path))  # blocking: a full backlog waits, not EAGAIN
            s.settimeout(10)
            idle.append(s)
        time.sleep(0.3)
        # One accept thread and at most `workers` threads, however many connect.
        assert threading.active_count() <= before + 1 + 2
        # Every connection is closed by the server: the 8 admitted after their idle timeout
        # (quietly), the other 192 at once with a one-line "busy".
        busy = 0
        started = time.monotonic()
        for s in idle:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            busy += b"busy" in data
            s.close()
        assert busy == 192
        assert time.monotonic() - started < 8  # 8 idle × 0.5 s over 2 workers, plus slack
        assert threading.active_count() <= before + 1 + 2
        # And it still answers its owner.
        reply = raw_request(server.path, {"op": "query", "sql": "SELECT 1"})
        assert reply[:1] == b"A", reply
    finally:
        for s in idle:
            s.close()
        server.close()
        store.close()


def test_a_long_data_folder_path_uses_a_private_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(os.fsencode(str(deep / "index.sock"))) > readsock.SUN_PATH_MAX
    store = Store(deep / "index.duckdb")
    server = QueryServer(store)
    try:
        assert server.path.parent != deep
        st = server.path.parent.lstat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
        assert stat.S_IMODE(server.path.lstat().st_mode) == 0o600
        with Reader(store.path) as reader:
            assert reader.query("SELECT 7").rows == [(7,)]
    finally:
        server.close()
        store.close()


def test_private_folder_taken_by_someone_else_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    with pytest.raises(readsock.SocketError, match="not a private folder"):
        readsock.ensure_private_dir(folder, os.geteuid())
    if os.geteuid() == 0:
        folder.chmod(0o700)
        os.chown(folder, other_uid(), -1)
        with pytest.raises(readsock.SocketError, match=f"owner uid {other_uid()}"):
            readsock.ensure_private_dir(folder, 0)
