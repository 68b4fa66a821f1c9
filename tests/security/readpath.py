"""Helpers of the read-path security tests: another uid, a data folder it can reach, a raw
client that speaks the read socket's framing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.command import ARCHIVEFLOW

OTHER_USER = "nobody"
OTHER_GROUP = "nogroup"
ROOT = Path(__file__).resolve().parents[2]


def need_other_uid() -> None:
    """Skip unless this test can run a process under another uid (root with setpriv)."""
    if os.geteuid() != 0:
        pytest.skip("running a client as another account (nobody) needs root, as in CI")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run a process as nobody")


def as_other(cmd: list[str]) -> list[str]:
    """`cmd` run as nobody:nogroup with no supplementary groups."""
    return ["setpriv", f"--reuid={OTHER_USER}", f"--regid={OTHER_GROUP}", "--clear-groups",
            *cmd]


def other_uid() -> int:
    import pwd

    return pwd.getpwnam(OTHER_USER).pw_uid


@contextmanager
def shared_folder(mode: int) -> Iterator[Path]:
    """A fresh folder under the system temp dir with `mode` (pytest's tmp_path is 0700, which
    would keep the other account out before any check of ours is reached)."""
    base = Path(tempfile.mkdtemp(prefix="af-readpath-"))
    try:
        base.chmod(0o755)
        data = base / "data"
        data.mkdir()
        data.chmod(mode)
        yield data
    finally:
        shutil.rmtree(base, ignore_errors=True)


def raw_request(path: Path, request: dict[str, object]) -> bytes:
    """Send one framed JSON request to the socket at `path`; the framed reply's payload."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        body = json.dumps(request).encode()
        s.sendall(struct.pack("!Q", len(body)) + body)
        head = b""
        while len(head) < 8:
            chunk = s.recv(8 - len(head))
            if not chunk:
                return b""
            head += chunk
        (n,) = struct.unpack("!Q", head)
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf


# The same client, as a script for a process of another uid (stdlib only).
RAW_CLIENT = r"""
import json, socket, struct, sys
path, request = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(path)
except OSError as e:
    print("CONNECT-ERROR", type(e).__name__); sys.exit(0)
body = json.dumps(request).encode()
try:
    s.sendall(struct.pack("!Q", len(body)) + body)
except OSError:
    pass  # a refusing server may close first; its reply is still there to read
data = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError as e:
    print("IO-ERROR", type(e).__name__); sys.exit(0)
print("REPLY", data[8:9].decode(errors="replace"), data[9:].decode(errors="replace"))
"""


def run_raw_client_as_other(path: Path, request: dict[str, object]) -> str:
    """RAW_CLIENT run as nobody; its one line of output."""
    proc = subprocess.run(as_other([sys.executable, "-c", RAW_CLIENT, str(path),
                                    json.dumps(request)]),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def archiveflow(data: Path, *args: str, other: bool = False,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `archiveflow` command on `data` (as nobody when `other`)."""
    cmd = [ARCHIVEFLOW, "--data-dir", str(data), *args]
    return subprocess.run(as_other(cmd) if other else cmd, capture_output=True, text=True,
                          timeout=300, cwd=ROOT if not other else "/",
                          env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "0", **(env or {})})
