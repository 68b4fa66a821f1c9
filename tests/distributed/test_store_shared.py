"""tests/store's claims, leases, moves and loads, run again on the shared index (DuckLake
with its catalog in PostgreSQL): the `store` fixture here is that backend."""

from __future__ import annotations

import threading

from archiveflow.store import transitions
from archiveflow.store.db import Store
from tests.store.test_load import (  # noqa: F401 - collected here with this `store`
    test_finish_results_in_one_update,
    test_insert_snapshots_returns_created_pairs_and_folders,
    test_one_snapshot_per_url_per_crawl,
    test_quotes_and_sql_are_stored_verbatim,
    test_tags_are_one_per_name_whatever_the_case,
)
from tests.store.test_transitions import (  # noqa: F401
    _insert,
    test_batch_moves_only_rows_that_can,
    test_every_move_from_every_status,
    test_expired_lease_is_reclaimed,
    test_renew_leases_keeps_started_rows_held,
    test_unknown_move_and_missing_row,
    test_update_requeues_matching_results_and_reopens_their_snapshots_and_crawls,
)


def test_expire_leases_takes_nothing_from_live_workers(store: Store) -> None:
    """On the shared index another machine may hold a lease: `resume`/`add` expire none."""
    _insert(store, "snapshot", "queued", "s")
    transitions.move(store.cursor(), "snapshot", "claim", "s", lease=3600)
    assert transitions.expire_leases(store.cursor()) == 0
    assert transitions.move(store.cursor(), "snapshot", "claim", ["s"], lease=60) == []


def test_two_processes_never_both_win(store: Store) -> None:
    """Two Stores (two DuckDB instances, as two machines have) claim from one crawl at
    once: every snapshot is claimed exactly once."""
    cur = store.cursor()
    cur.execute("INSERT INTO snapshot (id, crawl_id, url, output_dir) "
                "SELECT 's' || lpad(i::VARCHAR, 3, '0'), 'c', 'https://e/' || i, 'x' "
                "FROM range(30) t(i)")
    other = Store(store.path, catalog=store.catalog, storage=store.storage)
    won: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(name: str, s: Store) -> None:
        c = s.cursor()
        barrier.wait()
        misses = 0
        while misses < 3:  # a lost race claims nothing; three in a row: the crawl is empty
            rows = transitions.claim_next(c, "snapshot", "crawl_id = ?", ["c"], limit=3,
                                          lease=60)
            won[name].extend(r["id"] for r in rows)
            misses = 0 if rows else misses + 1

    threads = [threading.Thread(target=worker, args=(n, s))
               for n, s in (("a", store), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not set(won["a"]) & set(won["b"])
    assert sorted(won["a"] + won["b"]) == [f"s{i:03d}" for i in range(30)]
    assert won["a"] and won["b"]



def test_claims_over_tied_rows_return_only_rows_they_moved(store: Store) -> None:
    """The recorder inserts each snapshot's discovered URLs with an INSERT of its own, all
    in one transaction: one depth and one created_at (its now()) over several of the lake's
    files, so the claim's `ORDER BY depth, created_at LIMIT n` has ties. Every row a claim
    returns is one it moved to `started` (the emulated RETURNING once re-evaluated the WHERE
    in its UPDATE, which picked other tied rows than its select: it returned rows it had not
    moved, claimed again later by the same crawl loop or another machine), and no row is
    claimed twice."""
    cur = store.cursor()
    cur.execute("BEGIN")
    for b in range(10):
        cur.execute("INSERT INTO snapshot (id, crawl_id, url, output_dir, depth) "
                    "SELECT ? || lpad(i::VARCHAR, 3, '0'), 'c', ? || i, 'x', 1 "
                    "FROM range(30) t(i)", [f"s{b}_", f"https://e/{b}/"])
    cur.execute("COMMIT")
    seen: list[str] = []
    while rows := transitions.claim_next(cur, "snapshot", "crawl_id = ?", ["c"], limit=7,
                                         lease=3600):
        assert {r["status"] for r in rows} == {"started"}
        seen.extend(r["id"] for r in rows)
    assert len(seen) == len(set(seen)) == 300
