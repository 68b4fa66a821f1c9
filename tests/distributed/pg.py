"""A throwaway PostgreSQL server for the distributed tests and bench: Debian's binaries, a
temp data folder, a unix socket in a folder only its owner (and root) can enter.

initdb and postgres refuse to run as root; as root (CI, this container) the server runs as
the unprivileged `nobody` through `setpriv`, its folder handed over to that user. As any
other user it runs as that user. `make setup` installs the `postgresql` package.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DB_NAME = "archiveflow"
RUN_AS = "nobody"


def pg_bindir() -> Path | None:
    """The folder of initdb/pg_ctl/postgres: `pg_config --bindir`, else Debian's layout."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        cand = Path(out.stdout.strip())
        if (cand / "initdb").exists():
            return cand
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={_gid()}", "--clear-groups",
            "--inh-caps=-all", *cmd]


def _uid() -> int:
    import pwd
    return pwd.getpwnam(RUN_AS).pw_uid


def _gid() -> int:
    import pwd
    return pwd.getpwnam(RUN_AS).pw_gid


class PgServer:
    """One PostgreSQL server: `start()`, `dsn`, `stop()`, `kill()` (SIGKILL, for faults)."""

    def __init__(self, root: Path | None = None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; "
                               "`make setup` does)")
        self.bin = bindir
        self.root = Path(root or tempfile.mkdtemp(prefix="af-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = RUN_AS if os.geteuid() == 0 else os.environ.get("USER", "postgres")

    @property
    def dsn(self) -> str:
        """libpq key/value DSN of the database (unix socket, trust inside a 0700 folder)."""
        return f"host={self.sock} port=5432 dbname={DB_NAME} user={self.user}"

    def init(self) -> None:
        """initdb + the archiveflow database (once)."""
        self.sock.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for p in (self.root, self.sock):
                os.chown(p, _uid(), _gid())
        os.chmod(self.root, 0o700)
        subprocess.run(_as_owner([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                                  "-U", self.user, "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.start()
        subprocess.run(_as_owner([str(self.bin / "createdb"), "-h", str(self.sock), "-U",
                                  self.user, DB_NAME]), check=True, capture_output=True)

    def start(self) -> None:
        """Run postgres in the foreground of a child process; wait until it answers."""
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            _as_owner([str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.sock),
                       "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=200"]),
            # Not synchronous_commit=off: the tests SIGKILL this server, and with it off a
            # crash loses commits it had acknowledged (rows then missing from the index).
            # fsync=off only loses data when the machine itself goes down.
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = subprocess.run([str(self.bin / "pg_isready"), "-h", str(self.sock), "-q"])
            if ok.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: "
                                   f"{(self.root / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("postgres did not answer within 30 s")

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # a killed postmaster leaves its children: wait for them to notice and exit
        time.sleep(0.5)

    def stop(self) -> None:
        """Fast shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def remove(self) -> None:
        """Stop and delete everything."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
