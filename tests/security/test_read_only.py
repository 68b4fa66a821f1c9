"""Read-only means read-only (issue row "sql without --write"), in both read modes.

- direct: no process holds the index; the reader opens its own read-only DuckDB instance.
- socket: a writer in this test process holds the index and serves it; the reader (a Reader
  here, or the `archiveflow` command in a process of its own) goes through the read socket.

Each statement must be refused, change nothing in the index and write no file. Below the
statement check, DuckDB's own settings are tested bare: the locked-down direct instance and
the writer's READ ONLY transaction refuse on their own.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from archiveflow.store import readonly
from archiveflow.store.db import Store
from archiveflow.store.reader import QueryError, QueryServer, Reader
from tests.security.readpath import archiveflow

# (statement, what it would do); {out} is a file path the statement must not create.
ATTACKS: list[tuple[str, str]] = [
    ("EXPLAIN ANALYZE UPDATE snapshot SET title = 'x'", "write through EXPLAIN ANALYZE"),
    ("EXPLAIN ANALYZE CREATE TABLE pwned AS SELECT 1 AS x", "create through EXPLAIN ANALYZE"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'", "a file through EXPLAIN ANALYZE"),
    ("SET profiling_output = '{out}'", "where the profile goes"),
    ("SET enable_profiling = 'json'", "profiling on"),
    ("PRAGMA enable_profiling", "profiling on"),
    ("COPY (SELECT 1) TO '{out}'", "a file"),
    ("SELECT content FROM read_text('/etc/passwd')", "a file of the host"),
    ("SELECT content FROM read_text('/etc/shadow')", "a secret of the host"),
    ("SELECT * FROM read_csv('/etc/passwd')", "a file of the host"),
    ("SELECT * FROM '/etc/passwd'", "a file by replacement scan"),
    ("SELECT * FROM glob('/etc/*')", "the host's file names"),
    ("SELECT * FROM query('SELECT 1')", "SQL the check never saw"),
    ("ATTACH '{out}' AS other", "another database file"),
    ("INSTALL httpfs", "a download"),
    ("LOAD httpfs", "an extension"),
    ("CHECKPOINT", "a write of the file"),
    ("UPDATE snapshot SET title = 'x'", "a write"),
    ("CREATE TABLE pwned (x INT)", "a write"),
    ("SELECT 1; DROP TABLE snapshot", "a write after a read"),
]
READS: list[tuple[str, list[tuple[object, ...]]]] = [
    ("SELECT count(*) FROM snapshot", [(0,)]),
    ("WITH c AS (SELECT 2 AS x) SELECT x FROM c", [(2,)]),
    ("EXPLAIN ANALYZE SELECT count(*) FROM snapshot", []),
    ("SELECT count(*) > 0 FROM information_schema.tables", [(True,)]),
    ("SELECT count(*) FROM plugin_stats", [(0,)]),
    ("PRAGMA version", []),
    ("SELECT 1; SELECT 2", [(2,)]),
]


def _tables(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables()").fetchall())
    finally:
        con.close()


@pytest.fixture(params=["direct", "socket"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(mode, index path): in socket mode a writer in this process holds and serves it."""
    path = tmp_path / "data" / "index.duckdb"
    path.parent.mkdir()
    Store(path).close()
    if request.param == "direct":
        yield "direct", path
        return
    store = Store(path)
    server = QueryServer(store)
    try:
        yield "socket", path
    finally:
        server.close()
        store.close()


@pytest.mark.parametrize(("sql", "what"), ATTACKS, ids=[a[0][:40] for a in ATTACKS])
def test_refused_without_write(mode: tuple[str, Path], tmp_path: Path, sql: str, what: str
                               ) -> None:
    kind, path = mode
    out = tmp_path / "written.out"
    with Reader(path) as reader:
        assert reader.via_writer == (kind == "socket")
        with pytest.raises(QueryError) as caught:
            reader.query(sql.format(out=out))
        assert "\n" not in str(caught.value)
        if kind == "socket":
            assert "--write" in str(caught.value) or "no table or view" in str(caught.value)
        assert "root:" not in str(caught.value)  # no file content in the message
    assert not out.exists(), what
    if kind == "direct":
        assert "pwned" not in _tables(path)


@pytest.mark.parametrize(("sql", "rows"), READS, ids=[r[0][:40] for r in READS])
def test_reads_still_work(mode: tuple[str, Path], sql: str, rows: list[tuple[object, ...]]
                          ) -> None:
    _, path = mode
    with Reader(path) as reader:
        got = reader.query(sql).rows
    if rows:
        assert got == rows
    else:
        assert got


def test_direct_instance_refuses_on_its_own(tmp_path: Path) -> None:
    """No statement check: DuckDB's read-only file, external access off, locked settings."""
    path = tmp_path / "index.duckdb"
    Store(path).close()
    out = tmp_path / "x.csv"
    with readonly.read_only_connection(path) as con:
        for sql in ["EXPLAIN ANALYZE UPDATE snapshot SET title = 'x'",
                    "UPDATE snapshot SET title = 'x'",
                    f"COPY (SELECT 1) TO '{out}'",
                    "SELECT content FROM read_text('/etc/passwd')",
                    "SELECT * FROM '/etc/passwd'",
                    f"SET profiling_output = '{out}'",
                    "SET enable_external_access = true",
                    "SET lock_configuration = false",
                    f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
                    "LOAD httpfs"]:
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    assert not out.exists() and not (tmp_path / "other.duckdb").exists()


def test_writer_read_only_transaction_refuses_writes_on_its_own(tmp_path: Path) -> None:
    """No statement check: the READ ONLY transaction on the writer's own connection."""
    store = Store(tmp_path / "index.duckdb")
    try:
        for sql in ["EXPLAIN ANALYZE UPDATE snapshot SET title = 'x'",
                    "EXPLAIN ANALYZE CREATE TABLE pwned AS SELECT 1",
                    "INSERT INTO tag (name) VALUES ('x')"]:
            with pytest.raises(QueryError, match="read-only"):
                readonly.run_checked(store.cursor(), [readonly.Checked(sql, frozenset())], None)
        assert store.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'pwned'"
                             ).fetchone() == (0,)
        # The writer's connection itself is untouched: it still writes.
        store.execute("CREATE TABLE still_writes (x INT)")
    finally:
        store.close()


@pytest.mark.parametrize("held", [False, True], ids=["direct", "socket"])
def test_cli_sql_refuses_without_write(tmp_path: Path, held: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Store(data / "index.duckdb").close()
    out = tmp_path / "profile.json"
    store = Store(data / "index.duckdb") if held else None
    server = QueryServer(store) if store else None
    try:
        for sql in ["EXPLAIN ANALYZE UPDATE snapshot SET title = 'x'",
                    f"SET profiling_output = '{out}'; SET enable_profiling = 'json'; SELECT 1",
                    f"COPY (SELECT 1) TO '{out}'",
                    "SELECT content FROM read_text('/etc/shadow')"]:
            proc = archiveflow(data, "sql", sql)
            assert proc.returncode == 1, proc.stdout
            assert proc.stderr.startswith("archiveflow: ") and proc.stderr.count("\n") == 1
            assert "--write" in proc.stderr or "not allowed" in proc.stderr
        assert not out.exists()
        proc = archiveflow(data, "sql", "--format", "csv", "SELECT count(*) AS n FROM snapshot")
        assert proc.returncode == 0 and proc.stdout.splitlines() == ['"n"', "0"], proc.stderr
    finally:
        if server:
            server.close()
        if store:
            store.close()


def test_cli_sql_write_is_refused_while_the_index_is_held(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(data / "index.duckdb")
    server = QueryServer(store)
    try:
        proc = archiveflow(data, "sql", "--write", "CREATE TABLE notes (x INT)")
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1
        assert "wait for the crawl to finish or stop it" in proc.stderr
        assert store.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'notes'"
                             ).fetchone() == (0,)
    finally:
        server.close()
        store.close()
    # With no crawl holding it, --write opens the file read-write itself.
    proc = archiveflow(data, "sql", "--write", "CREATE TABLE notes (x INT); "
                       "INSERT INTO notes VALUES (1)")
    assert proc.returncode == 0, proc.stderr
    assert archiveflow(data, "sql", "--format", "json", "SELECT x FROM notes"
                       ).stdout.strip() == '{"x": 1}'


def test_cli_csv_neutralises_formulas(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Store(data / "index.duckdb").close()
    proc = archiveflow(data, "sql", "--format", "csv",
                       "SELECT '=HYPERLINK(\"http://x\")' AS a, '+1' AS b, '-1' AS c, '@x' AS d, "
                       "chr(9) || '=1' AS e, 'plain' AS f, -5 AS n")
    assert proc.returncode == 0, proc.stderr
    row = next(csv.DictReader(io.StringIO(proc.stdout)))
    assert row == {"a": "'=HYPERLINK(\"http://x\")", "b": "'+1", "c": "'-1", "d": "'@x",
                   "e": "'\t=1", "f": "plain", "n": "-5"}
