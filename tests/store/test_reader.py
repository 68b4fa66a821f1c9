"""store/reader.py on a real index with no writer running (direct mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiveflow.store.db import Store
from archiveflow.store.reader import QueryError, Reader


def test_reads_directly_and_refuses_writes_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "index.duckdb"
    Store(path).close()
    with Reader(path) as reader:
        assert not reader.via_writer
        assert reader.query("SELECT count(*) AS n FROM snapshot").rows == [(0,)]
        with pytest.raises(QueryError, match="add --write"):
            reader.query("DELETE FROM snapshot")
    with Reader(path, write=True) as writer:
        writer.query("CREATE TABLE notes (x INT)", write=True)
        writer.query("INSERT INTO notes VALUES (1)", write=True)
    with Reader(path) as reader:
        assert reader.query("SELECT x FROM notes").rows == [(1,)]


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no index at .*archive something first"):
        Reader(tmp_path / "index.duckdb")
