"""Bulk loading through store/load.py into a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

from archiveflow.store import load, results, snapshots
from archiveflow.store.db import SCHEMA_VERSION, Store
from archiveflow.store.errors import IndexLocked


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


def test_folder_domain_matches_domain_expr_on_odd_urls() -> None:
    """The fast per-head domain (load._domains) gives exactly domain_expr's answer."""
    import random

    import polars as pl

    odd = ["https://Example.COM/path", "http://user:pw@host.com:8080/x", "http://user@/path",
           "http://@host/", "http://[::1]:80/", "http://[::1/x]/y", "http://[abc/def",
           "ftp://host?x=1", "http://host#frag", "http://host", "mailto:x@y.com",
           "no-scheme.com/path", "1http://x.com/", "ht tp://x.com", "http:///path",
           "HTTP://ÜNICODE.de/ä", "http://ünï.de:9/ä?q", "http://a/b://c/d", "javascript://x",
           "http://us/er@host/x", "http://u@h@x/", "", "http://İSTANBUL.com/",
           "https://例子.测试/路径", "//x.com/a", "x://", "a+b.c-d://Host/x", "http://host\\p",
           "http://ho?st/", "http://h:/", "http://:80/", "é://x.com/", "http://x.com?u=http://y/"]
    rng = random.Random(8)
    alphabet = "aB:/?#@[]%.-_Üİ例 "
    odd += [rng.choice(["http://", "h://", "", "x:", "1a://"])
            + "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
            for _ in range(5000)]
    df = pl.DataFrame({"url": [*odd, None]}, schema={"url": pl.Utf8})
    want = df.select(load.domain_expr())["url"].to_list()
    assert load._domains(df).to_list() == want


def test_insert_snapshots_returns_created_pairs_and_folders(store: Store) -> None:
    import polars as pl

    cur = store.cursor()
    rows = pl.DataFrame({"url": ["https://A.example/x", "https://b.example/y",
                                 "https://A.example/x"]})
    created = load.insert_snapshots(cur, rows, crawl_id="c1", username="ann")
    assert [u for _, u in created] == ["https://A.example/x", "https://b.example/y"]
    again = pl.DataFrame({"url": ["https://b.example/y", "https://c.example/"]})
    assert [u for _, u in load.insert_snapshots(cur, again, crawl_id="c1", username="ann")
            ] == ["https://c.example/"]
    got = dict(cur.execute("SELECT id, output_dir FROM snapshot").fetchall())
    assert len(got) == 3
    for sid, out in got.items():
        assert sid[14] == "7"  # UUIDv7
        user, snaps, day, domain, tail = out.split("/")[1:]
        assert (user, snaps, len(day), tail) == ("ann", "snapshots", 8, sid)
        assert domain in ("a.example", "b.example", "c.example")


def test_tags_are_one_per_name_whatever_the_case(store: Store) -> None:
    cur = store.cursor()
    lines = [json.dumps({"type": "Snapshot", "url": f"https://t.example/{i}"}) for i in range(2)]
    load.load_snapshot_jsonl(cur, lines, crawl_id="c")
    a, b = (r[0] for r in cur.execute("SELECT id FROM snapshot ORDER BY url").fetchall())
    snapshots.add_tags(cur, [(a, "Harbor"), (a, "harbor "), (b, "HARBOR")])
    snapshots.add_tags(cur, [(b, "harbor"), (b, "Ships")])
    assert cur.execute("SELECT name FROM tag ORDER BY name").fetchall() == [
        ("Harbor",), ("Ships",)]
    assert cur.execute("SELECT snapshot_id = ?, tag FROM snapshot_tag ORDER BY 1 DESC, 2",
                       [a]).fetchall() == [(True, "Harbor"), (False, "Harbor"), (False, "Ships")]


_NO_PYARROW = r'''
import sys
from pathlib import Path
import polars as pl
from archiveflow.store import load, results, search, snapshots
from archiveflow.store.db import Store
import archiveflow.store.reader, archiveflow.store.readonly  # the crawl's query server
st = Store(Path(sys.argv[1]) / "index.duckdb")
with st.transaction() as cur:
    got = load.insert_snapshots(cur, pl.DataFrame({"url": ["https://a.example/", "https://b.example/"]}),
                                crawl_id="c", username="default")
    ids = [i for i, _ in got]
    # the same URLs again: skipped by the anti-join that reads the batch twice
    assert load.insert_snapshots(cur, pl.DataFrame({"url": ["https://a.example/"]}),
                                 crawl_id="c", username="default") == []
    claimed = [r["id"] for r in snapshots.claim_snapshots(cur, "c", limit=2, lease=60)]
    assert sorted(claimed) == sorted(ids)
    rows = [{"id": f"r{i}", "snapshot_id": s, "plugin": "p", "hook_name": "h",
             "output_dir": s, "is_background": False} for i, s in enumerate(ids)]
    results.create_started(cur, rows, lease=60)
    assert len(results.create_pending(cur, rows)) == 0
    assert sorted(results.finish_results(cur, [{"id": r["id"], "status": "succeeded"}
                                               for r in rows])) == ["r0", "r1"]
    assert snapshots.add_tags(cur, [(ids[0], "News"), (ids[1], "news")]) == 2
    # the recorder's search-text indexer (no text files here: url and title rows)
    assert search.index_snapshots(cur, Path(sys.argv[1]), ids) == 2
st.close()
print("pyarrow" in sys.modules)
'''


def test_the_local_index_is_written_without_pyarrow(tmp_path: Path) -> None:
    """A crawl's writes (discovered URLs, claim, results, tags, search text) and its query
    server's modules load no pyarrow: DuckDB imported pyarrow and pyarrow.dataset for every
    polars frame it scanned, ≈70 MB of the crawl process (bench/README.md, #18). In a fresh
    interpreter, so that nothing else imported it first."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _NO_PYARROW, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
