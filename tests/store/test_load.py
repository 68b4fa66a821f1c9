"""Bulk loading through store/load.py into a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

from store import load, results, snapshots
from store.db import SCHEMA_VERSION, Store
from store.errors import IndexLocked


def test_100k_records_in_one_batch_and_bad_ones_reported(store: Store) -> None:
    lines = [json.dumps({"type": "Snapshot", "url": f"https://ex{i % 50}.com/p{i}", "depth": 1})
             for i in range(100_000)]
    lines += ["garbage {", '{"type": "Snapshot"}', '{"type": "Tag", "name": "x"}',
              '{"type": "Snapshot", "url": "https://ok.example/", "depth": -1}']
    report = load.load_snapshot_jsonl(store.cursor(), lines, crawl_id="c1")
    assert report.inserted == {"snapshot": 100_000}
    reasons = sorted(e.error for e in report.errors)
    assert reasons == ["depth must be >= 0", "not a JSON object", "not a Snapshot record",
                       "url missing"]
    row = store.cursor().execute(
        "SELECT count(*), count(DISTINCT id), min(output_dir) FROM snapshot").fetchone()
    assert row is not None
    assert row[0] == row[1] == 100_000
    assert row[2].startswith("users/default/snapshots/") and "/ex0.com/" in row[2]


def test_one_snapshot_per_url_per_crawl(store: Store) -> None:
    cur = store.cursor()
    lines = [json.dumps({"type": "Snapshot", "url": "https://a.example/"})] * 3
    assert load.load_snapshot_jsonl(cur, lines, crawl_id="c1").inserted["snapshot"] == 1
    assert load.load_snapshot_jsonl(cur, lines, crawl_id="c1").inserted["snapshot"] == 0
    assert load.load_snapshot_jsonl(cur, lines, crawl_id="c2").inserted["snapshot"] == 1


def test_quotes_and_sql_are_stored_verbatim(store: Store) -> None:
    cur = store.cursor()
    url = "https://e.example/?q=1'); DROP TABLE snapshot; --"
    load.load_snapshot_jsonl(cur, [json.dumps({"type": "Snapshot", "url": url})], crawl_id="c")
    (sid,) = cur.execute("SELECT id FROM snapshot").fetchone() or ("",)
    snapshots.add_tags(cur, [(sid, "it's \"quoted\"; DELETE FROM tag")])
    assert cur.execute("SELECT url FROM snapshot").fetchall() == [(url,)]
    assert cur.execute("SELECT tag FROM snapshot_tag").fetchall() == [
        ("it's \"quoted\"; DELETE FROM tag",)]


def test_finish_results_in_one_update(store: Store) -> None:
    cur = store.cursor()
    rows = [{"id": f"r{i}", "snapshot_id": "s", "plugin": "p", "hook_name": f"h{i}",
             "output_dir": "x"} for i in range(1000)]
    assert len(results.create_pending(cur, rows)) == 1000
    assert results.create_pending(cur, rows) == []  # same (snapshot, hook) pairs kept
    cur.execute("UPDATE archiveresult SET status = 'started'")
    outcomes = [{"id": f"r{i}", "status": "succeeded" if i % 2 else "failed",
                 "output_str": f"out {i}", "output_json": {"i": i}} for i in range(1000)]
    assert len(results.finish_results(cur, outcomes)) == 1000
    got = dict(cur.execute("SELECT status, count(*) FROM archiveresult GROUP BY 1").fetchall())
    assert got == {"succeeded": 500, "failed": 500}
    # already final: a second finish changes nothing
    assert results.finish_results(cur, outcomes) == []


def test_schema_is_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "index.duckdb"
    Store(path).close()
    s = Store(path)
    assert s.cursor().execute("SELECT max(version) FROM schema_version").fetchone() == (
        SCHEMA_VERSION,)
    s.close()


def test_second_process_gets_a_clear_lock_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "index.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); "
         "time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        try:
            Store(path)
        except IndexLocked as e:
            assert f"process {holder.pid}" in str(e)
        else:
            raise AssertionError("a second writer opened a locked index")
    finally:
        holder.kill()
        holder.wait()
