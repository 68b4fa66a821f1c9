"""The named queries flows/ and tasks/ call instead of writing SQL, on a real DuckDB file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from archiveflow.store import crawls, load, processes, snapshots
from archiveflow.store.db import Store
from archiveflow.store.ids import new_id


def _crawl_with(store: Store, urls: list[str]) -> tuple[str, list[tuple[str, str]]]:
    cur = store.cursor()
    crawl = crawls.create_crawl(cur, seeds="x", config={"A": "1"})
    made = load.insert_snapshots(cur, load.frame("snapshot", [{"url": u} for u in urls]),
                                 crawl_id=crawl["id"], username="default")
    return crawl["id"], made


def test_snapshot_lookups_and_seal(store: Store) -> None:
    crawl_id, made = _crawl_with(store, ["https://a/1", "https://a/2"])
    cur = store.cursor()
    assert snapshots.count_in_crawl(cur, crawl_id) == 2
    assert snapshots.archived_urls(cur, ["https://a/2", "https://b/'; DROP", "x"]) == {
        "https://a/2"}
    assert snapshots.archived_urls(cur, []) == set()
    ids = [sid for sid, _ in made]
    claimed = snapshots.claim_snapshots(cur, crawl_id, limit=1, lease=60)
    assert snapshots.seal_snapshots(cur, ids) == [claimed[0]["id"]]  # only the started one
    assert snapshots.counts(cur, crawl_id) == {"sealed": 1, "queued": 1}


def test_titles_come_from_a_succeeded_title_hook(store: Store) -> None:
    _, made = _crawl_with(store, ["https://a/1", "https://a/2"])
    cur = store.cursor()
    rows = [{"id": new_id(), "snapshot_id": sid, "plugin": "title", "hook_name": "t",
             "output_dir": "x", "status": status, "output_str": f"T{i}"}
            for i, ((sid, _), status) in enumerate(zip(made, ["succeeded", "failed"],
                                                       strict=True))]
    load.insert_frame(cur, "archiveresult", load.frame("archiveresult", rows))
    snapshots.set_titles_from_results(cur, [sid for sid, _ in made])
    titles = dict(cur.execute("SELECT url, title FROM snapshot").fetchall())
    assert titles == {"https://a/1": "T0", "https://a/2": None}


def test_crawl_label_and_config_patch(store: Store) -> None:
    crawl_id, _ = _crawl_with(store, [])
    cur = store.cursor()
    crawls.set_label(cur, crawl_id, "news")
    assert crawls.merge_config(cur, crawl_id, {"B": "2", "A": "3"}) == {"A": "3", "B": "2"}
    row = crawls.get_crawl(cur, crawl_id)
    assert row is not None and row["label"] == "news"
    assert json.loads(row["config"]) == {"A": "3", "B": "2"}


def test_process_rows_in_bulk(store: Store) -> None:
    cur = store.cursor()
    rows = [{"id": new_id(), "owner_type": "archiveresult", "owner_id": "r", "hook_name": "h",
             "pid": 10 + i, "cmd": "x", "cwd": "/", "started_at": datetime.now(UTC)}
            for i in range(3)]
    assert processes.add_processes(cur, rows, fresh_ids=True) == 3
    assert processes.add_processes(cur, rows) == 0  # known ids are skipped
    assert processes.add_processes(cur, []) == 0
    got = pl.DataFrame(cur.execute("SELECT pid FROM process ORDER BY pid").fetchall(),
                       schema=["pid"], orient="row")
    assert got["pid"].to_list() == [10, 11, 12]
