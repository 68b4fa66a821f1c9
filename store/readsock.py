"""The read socket's file: where it lives, who may bind it, who may talk on it.

- The socket is a FILE, `index.sock` beside `index.duckdb`, mode 0600, so the file system
  already keeps other accounts out of a private data folder. Not an abstract name: those
  have no permissions and anyone can bind one first.
- A unix socket path must fit `sun_path`: 107 bytes on Linux (108 with the NUL; measured:
  binding a 108-byte path fails with "AF_UNIX path too long"). When the data folder's path
  is too long, the socket goes into a private folder of the owner (`/run/user/<uid>/
  archiveflow`, else `/tmp/archiveflow-<uid>`), created 0700 and refused unless it is a real
  folder of this uid open to no one else; named by a hash of the index path. If even that
  does not fit, starting the server fails with a message; there is no abstract fallback.
- Both ends check the other's uid with SO_PEERCRED: the server answers only its own uid; the
  client talks only to a server of its own uid. The server is the crawl of the data folder's
  owner, so that is the owner on both ends.
- At start, a path answered by a live process is an error (`SocketInUse`), never silently
  skipped; a path nobody answers on (left by a crash) is a stale socket and is replaced.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from archiveflow.store.errors import StoreError

SUN_PATH_MAX: Final[int] = 107  # bytes of a socket path on Linux (sun_path is 108 with NUL)
SOCKET_NAME: Final[str] = "index.sock"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class SocketError(StoreError):
    """The read socket cannot be used; the message says why and what to do."""


class SocketInUse(SocketError):
    """Another live process answers on the socket path this index's server needs."""


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a unix socket (from SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    """The credentials of the process at the other end of `sock`."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:  # without it neither end can know who is at the other
        raise SocketError("this system has no SO_PEERCRED: reading the index while a crawl "
                          "runs needs Linux; wait for the crawl to finish")
    raw = sock.getsockopt(socket.SOL_SOCKET, opt, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid, uid, gid)


def _fits(path: Path) -> bool:
    return len(os.fsencode(str(path))) <= SUN_PATH_MAX


def _private_dir(uid: int) -> Path:
    run = Path(f"/run/user/{uid}")
    try:
        st = run.lstat()
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077:
            return run / "archiveflow"
    except OSError:
        pass
    return Path(f"/tmp/archiveflow-{uid}")


def ensure_private_dir(folder: Path, uid: int) -> None:
    """Create `folder` 0700 if missing; SocketError unless it is a real folder of `uid` that
    no one else may enter (another account could have made it first, to catch our socket)."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
    except OSError as e:
        raise SocketError(f"cannot create the private socket folder {folder}: "
                          f"{e.strerror or e}") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise SocketError(
            f"{folder} is not a private folder of uid {uid} (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}); remove it, or use a data folder with a shorter "
            f"path (at most {SUN_PATH_MAX} bytes for the socket)")


def socket_path(index_path: Path, uid: int | None = None) -> Path:
    """Where the read socket of the index at `index_path` lives (the same on both ends)."""
    index_path = index_path.resolve()
    beside = index_path.parent / SOCKET_NAME
    if _fits(beside):
        return beside
    uid = os.geteuid() if uid is None else uid
    digest = hashlib.sha256(str(index_path).encode()).hexdigest()[:24]
    path = _private_dir(uid) / f"{digest}.sock"
    if not _fits(path):
        raise SocketError(f"no socket path fits {SUN_PATH_MAX} bytes for {index_path}: "
                          "use a data folder with a shorter path")
    return path


def _probe(path: Path) -> Peer | None:
    """The peer answering on `path`, or None if nothing does (a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError as e:
            raise SocketError(f"cannot check the socket {path}: {e.strerror or e}") from e
        return peer_of(s)


def listen(path: Path, backlog: int = 64) -> socket.socket:
    """A listening socket bound at `path`, mode 0600; a stale socket file there is replaced.

    SocketInUse when a live process answers on `path`; SocketError when `path` is something
    other than a socket, or cannot be bound."""
    uid = os.geteuid()
    if path.name != SOCKET_NAME:  # in the private folder, not beside the index
        ensure_private_dir(path.parent, uid)
    try:
        st: os.stat_result | None = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketError(f"{path} exists and is not a socket: remove it so that "
                              "`sql`/`status` can read the index while a crawl runs")
        peer = _probe(path)
        if peer is not None:
            raise SocketInUse(
                f"socket {path} is already answered by process {peer.pid} (uid {peer.uid}): "
                "another archiveflow serves this index, or another account took the name; "
                "stop that process, then start again")
        try:
            path.unlink()  # stale: its process is gone
        except OSError as e:
            raise SocketError(f"cannot remove the stale socket {path} (owner uid {st.st_uid}): "
                              f"{e.strerror or e}") from e
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        # The uid check is the guard; the mode keeps other accounts from even connecting.
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise SocketInUse(f"socket {path} was taken by another process while starting; "
                              "stop it, then start again") from e
        raise SocketError(f"cannot serve queries on {path}: {e.strerror or e}") from e
    return sock


def connect(path: Path, index_path: Path) -> socket.socket:
    """A connection to the server of `index_path` at `path`, after checking that the server
    runs as this uid. SocketError saying why otherwise."""
    uid = os.geteuid()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(10.0)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise SocketError(
                f"index {index_path} is locked by a process that serves no queries (a reindex, "
                "a search rebuild or an older archiveflow?); wait for it to finish") from e
        except PermissionError as e:
            raise SocketError(
                f"permission denied on {path}: while a crawl runs, only the account that runs "
                f"it can read {index_path}") from e
        peer = peer_of(s)
        if peer.uid != uid:
            raise SocketError(
                f"refusing the index server on {path}: it runs as uid {peer.uid} "
                f"(process {peer.pid}), not as you (uid {uid}); another account may be posing "
                "as archiveflow: stop that process or remove the file")
        s.settimeout(None)
        return s
    except BaseException:
        s.close()
        raise
