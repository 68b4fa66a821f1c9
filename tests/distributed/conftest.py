"""The distributed tests' PostgreSQL (one per session) and the shared index on it."""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiveflow.store.db import Store
from tests.distributed.pg import PgServer, pg_bindir

if pg_bindir() is None:  # `make setup` installs it; a bare checkout skips, saying why
    pytest.skip("PostgreSQL is not installed (apt-get install postgresql)",
                allow_module_level=True)

_names = itertools.count()
# Base tables of schema.sql (views are derived): what a fresh test empties.
TABLES = ("machine", "crawl", "snapshot", "archiveresult", "output_file", "machine_binary",
          "tag", "snapshot_tag", "process", "record_error")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server of the session, on a unix socket in a private folder (a temp
    folder of its own: pytest's is closed to the unprivileged user it runs as under root)."""
    server = PgServer()
    server.init()
    yield server
    server.remove()


def new_catalog(pg: PgServer) -> str:
    """A fresh, empty database on the session's server; its postgresql:// URI."""
    name = f"lake{os.getpid()}_{next(_names)}"
    subprocess.run(["psql", "-h", str(pg.sock), "-U", pg.user, "-d", "archiveflow", "-q",
                    "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"postgresql://{pg.user}@/{name}?host={pg.sock}"


@pytest.fixture(scope="session")
def shared_store(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One shared index (DuckLake on the session's PostgreSQL) for the store tests."""
    root = tmp_path_factory.mktemp("lake")
    s = Store(root / "index.duckdb", catalog=new_catalog(pg), storage=root / "lake")
    yield s
    s.close()


@pytest.fixture
def store(shared_store: Store, monkeypatch: pytest.MonkeyPatch,
          request: pytest.FixtureRequest) -> Iterator[Store]:
    """The shared index, emptied: the `store` of tests/store's tests, on the other backend.
    A test that opens a Store of its own opens this catalog too."""
    cur = shared_store.cursor()
    counts = cur.execute(" UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)).fetchall()
    full = [t for t, n in counts if n]
    # every_move's rows have ids of their own case: no need to empty (≈0.5 s a test)
    if full and "every_move" not in request.node.name:
        cur.execute("BEGIN")
        for table in full:
            cur.execute(f"DELETE FROM {table}")
        cur.execute("COMMIT")
    monkeypatch.setenv("ARCHIVEFLOW_CATALOG", str(shared_store.catalog))
    monkeypatch.setenv("ARCHIVEFLOW_STORAGE", str(shared_store.storage))
    yield shared_store


@pytest.fixture(scope="session")
def prefect_on_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Prefect server whose database is on PostgreSQL (what every machine of a shared
    set-up reports to), with its API password; the client's settings. Its PostgreSQL is
    not the catalog's: the tests restart that one, and Prefect's clients do not retry the
    500s its server answers meanwhile."""
    pg = PgServer()
    pg.init()
    db = urllib.parse.urlsplit(new_catalog(pg)).path.lstrip("/")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = f"archiveflow:{secrets.token_hex(16)}"
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**os.environ, "PREFECT_HOME": str(home),
           "PREFECT_API_DATABASE_CONNECTION_URL":
               f"postgresql+asyncpg://{pg.user}@/{db}?host={pg.sock}",
           "PREFECT_SERVER_API_AUTH_STRING": auth, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")  # noqa: SIM115 - the server's, closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
         "127.0.0.1", "--port", str(port), "--analytics-off", "--no-ui"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240  # a fresh database migrates first (≈50 s here)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError((home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        else:
            raise RuntimeError("the Prefect server on PostgreSQL did not answer in 240 s")
        yield {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": auth, "db": db,
               "sock": str(pg.sock), "user": pg.user}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
        pg.remove()
