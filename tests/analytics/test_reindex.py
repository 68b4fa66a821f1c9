"""`archiveflow reindex` rebuilds the index from the archive folder alone."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.flows.conftest import run_cli

QUERIES = {
    "crawls": "SELECT id, status, seeds, max_depth, tags, plugins, config, created_at "
              "FROM crawl ORDER BY id",
    "snapshots": "SELECT id, crawl_id, url, status, depth, parent_id, title, created_at, "
                 "output_dir, config FROM snapshot ORDER BY id",
    "results": "SELECT snapshot_id, hook_name, plugin, status, output_str, error, "
               "output_json, start_ts, end_ts, exit_code, output_size, output_count, "
               "is_background FROM archiveresult ORDER BY snapshot_id, hook_name",
    "tags": "SELECT snapshot_id, tag FROM snapshot_tag ORDER BY ALL",
    "files": "SELECT a.snapshot_id, a.hook_name, f.path, f.size, f.mimetype FROM output_file f "
             "JOIN archiveresult a ON a.id = f.archiveresult_id ORDER BY ALL",
}


def _dump(index: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(index), read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in QUERIES.items()}
    finally:
        con.close()


@pytest.fixture(scope="module")
def copy(archive: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("reindex") / "data"
    shutil.copytree(archive["data"], data, ignore=shutil.ignore_patterns("prefect"))
    return data


def test_reindex_after_deleting_the_index_gives_the_same_rows(copy: Path) -> None:
    before = _dump(copy / "index.duckdb")
    assert before["results"] and before["snapshots"]
    (copy / "index.duckdb").unlink()
    (copy / "index.duckdb.wal").unlink(missing_ok=True)
    proc = run_cli(copy, "reindex")
    assert proc.returncode == 0, proc.stderr
    after = _dump(copy / "index.duckdb")
    for name in QUERIES:
        assert after[name] == before[name], name
    # search works on the rebuilt index
    proc = run_cli(copy, "search", "quick zebra")
    assert proc.returncode == 0 and "page2.html" in proc.stdout.splitlines()[1]


def test_reindex_keeps_the_old_index_aside(copy: Path) -> None:
    before = _dump(copy / "index.duckdb")
    proc = run_cli(copy, "reindex")
    assert proc.returncode == 0, proc.stderr
    kept = sorted(copy.glob("index.duckdb.*.bak"))
    assert len(kept) == 1 and "kept as" in proc.stdout
    assert _dump(kept[0]) == before
    assert _dump(copy / "index.duckdb") == before
