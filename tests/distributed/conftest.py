"""The distributed tests' PostgreSQL (one per session) and the shared index on it."""

from __future__ import annotations

import itertools
import os
import subprocess
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


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tmp_path
