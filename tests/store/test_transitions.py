"""The table of legal moves, walked against a real DuckDB file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from archiveflow.store import transitions
from archiveflow.store.db import Store
from archiveflow.store.errors import IllegalTransition, RowNotFound
from archiveflow.store.transitions import MOVES, STATUSES


def _insert(store: Store, table: str, status: str, row_id: str) -> None:
    cur = store.cursor()
    if table == "crawl":
        cur.execute("INSERT INTO crawl (id, output_dir, seeds, status) VALUES (?, 'x', 'y', ?)",
                    [row_id, status])
    elif table == "snapshot":
        cur.execute("INSERT INTO snapshot (id, crawl_id, url, output_dir, status) "
                    "VALUES (?, 'c', ?, 'x', ?)", [row_id, f"https://e/{row_id}", status])
    elif table == "archiveresult":
        cur.execute("INSERT INTO archiveresult (id, snapshot_id, plugin, hook_name, output_dir, "
                    "status) VALUES (?, 's', 'p', ?, 'x', ?)", [row_id, row_id, status])
    else:
        cur.execute("INSERT INTO machine_binary (id, machine_id, name, output_dir, status) "
                    "VALUES (?, 'm', ?, 'x', ?)", [row_id, row_id, status])


CASES = [
    (table, name, status)
    for table, moves in MOVES.items()
    for name in moves
    for status in STATUSES[table]
]


@pytest.mark.parametrize(("table", "name", "status"), CASES)
def test_every_move_from_every_status(store: Store, table: str, name: str, status: str) -> None:
    row_id = f"{table}-{name}-{status}"
    _insert(store, table, status, row_id)
    mv = MOVES[table][name]
    if status in mv.sources:
        rows = transitions.move(store.cursor(), table, name, row_id, lease=60)
        assert rows[0]["status"] == mv.target
        got = store.cursor().execute(f"SELECT status, retry_at FROM {table} WHERE id = ?",
                                     [row_id]).fetchone()
        assert got is not None and got[0] == mv.target
        assert (got[1] is not None) == mv.leases
    else:
        with pytest.raises(IllegalTransition, match=f"{table} {row_id} is {status}"):
            transitions.move(store.cursor(), table, name, row_id)


def test_target_statuses_are_legal_statuses() -> None:
    for table, moves in MOVES.items():
        for mv in moves.values():
            assert mv.target in STATUSES[table]
            assert set(mv.sources) <= set(STATUSES[table])


def test_unknown_move_and_missing_row(store: Store) -> None:
    with pytest.raises(IllegalTransition, match="no move 'explode'"):
        transitions.move(store.cursor(), "snapshot", "explode", "x")
    with pytest.raises(RowNotFound):
        transitions.move(store.cursor(), "snapshot", "seal", "nope")


def test_batch_moves_only_rows_that_can(store: Store) -> None:
    for i, status in enumerate(["started", "queued", "started"]):
        _insert(store, "snapshot", status, f"s{i}")
    moved = transitions.move(store.cursor(), "snapshot", "seal", ["s0", "s1", "s2"])
    assert sorted(r["id"] for r in moved) == ["s0", "s2"]


def test_expired_lease_is_reclaimed(store: Store) -> None:
    _insert(store, "snapshot", "queued", "a")
    cur = store.cursor()
    won = transitions.claim_next(cur, "snapshot", "crawl_id = ?", ["c"], limit=5, lease=60)
    assert [r["id"] for r in won] == ["a"]
    # lease still held: nothing to claim
    assert transitions.claim_next(cur, "snapshot", "crawl_id = ?", ["c"], limit=5, lease=60) == []
    cur.execute("UPDATE snapshot SET retry_at = now() - INTERVAL 1 SECOND WHERE id = 'a'")
    again = transitions.claim_next(cur, "snapshot", "crawl_id = ?", ["c"], limit=5, lease=60)
    assert [r["id"] for r in again] == ["a"]


def test_two_threads_never_both_win(tmp_path: Path) -> None:
    store = Store(tmp_path / "index.duckdb")
    for i in range(200):
        _insert(store, "snapshot", "queued", f"s{i:03d}")
    won: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        cur = store.cursor()
        barrier.wait()
        for _ in range(60):
            rows = transitions.claim_next(cur, "snapshot", "crawl_id = ?", ["c"], limit=7,
                                          lease=60)
            won[name].extend(r["id"] for r in rows)

    threads = [threading.Thread(target=worker, args=(n,)) for n in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(won["a"]) & set(won["b"])
    assert len(won["a"]) + len(won["b"]) == 200
    store.close()


def test_expire_leases_hands_back_every_started_row(store: Store) -> None:
    """After a crash: every `started` row of every leased table becomes claimable again."""
    for table in transitions.LEASED:
        _insert(store, table, "queued", f"{table}-q")
        _insert(store, table, "queued", f"{table}-s")
        transitions.move(store.cursor(), table, "claim", f"{table}-s", lease=3600)
    assert transitions.expire_leases(store.cursor()) == len(transitions.LEASED)
    cur = store.cursor()
    for table in transitions.LEASED:
        # the queued row is left as it was; the started one is claimable now
        assert cur.execute(f"SELECT retry_at FROM {table} WHERE id = ?",
                           [f"{table}-q"]).fetchone() == (None,)
        assert [r["id"] for r in transitions.move(cur, table, "claim", [f"{table}-s"],
                                                  lease=60)] == [f"{table}-s"]


def test_renew_leases_keeps_started_rows_held(store: Store) -> None:
    for name in ("a", "b"):
        _insert(store, "archiveresult", "queued", name)
    cur = store.cursor()
    transitions.move(cur, "archiveresult", "claim", "a", lease=60)
    cur.execute("UPDATE archiveresult SET retry_at = now() - INTERVAL 1 SECOND WHERE id = 'a'")
    transitions.renew_leases(cur, "archiveresult", ["a", "b"], 3600)
    held = dict(cur.execute("SELECT id, retry_at > now() + INTERVAL 59 MINUTE FROM archiveresult"
                            ).fetchall())
    assert held == {"a": True, "b": None}  # b is queued: no lease to renew
    assert transitions.move(cur, "archiveresult", "claim", ["a"], lease=60) == []
    with pytest.raises(ValueError, match="no lease on table 'tag'"):
        transitions.renew_leases(cur, "tag", ["a"], 60)


def test_update_requeues_matching_results_and_reopens_their_snapshots_and_crawls(
        store: Store) -> None:
    """`archiveflow update`'s set-based moves: failed results → queued, their snapshots and
    crawls sealed → queued; other statuses, plugins, URLs and unsealed crawls untouched."""
    from archiveflow.store.results import requeue_for_update

    cur = store.cursor()
    for crawl, status in (("c1", "sealed"), ("c2", "sealed"), ("c3", "started")):
        cur.execute("INSERT INTO crawl (id, output_dir, seeds, status) VALUES (?, 'x', 'y', ?)",
                    [crawl, status])
    for snap, crawl in (("s1", "c1"), ("s2", "c2"), ("s3", "c3")):
        cur.execute("INSERT INTO snapshot (id, crawl_id, url, output_dir, status) "
                    "VALUES (?, ?, ?, 'x', ?)",
                    [snap, crawl, f"https://e/{snap}", "sealed"])
    for rid, snap, plugin, status in (("r1", "s1", "wget", "failed"),
                                      ("r2", "s1", "title", "succeeded"),
                                      ("r3", "s2", "wget", "failed"),
                                      ("r4", "s2", "pdf", "failed"),
                                      ("r5", "s3", "wget", "failed"),
                                      ("r6", "s2", "dom", "noresults")):
        cur.execute("INSERT INTO archiveresult (id, snapshot_id, plugin, hook_name, output_dir, "
                    "status) VALUES (?, ?, ?, ?, 'x', ?)", [rid, snap, plugin, rid, status])
    with store.transaction() as tx:
        assert requeue_for_update(tx, plugins=["wget"], url_contains="/s1") == {
            "results": ["r1"], "snapshots": ["s1"], "crawls": ["c1"]}
    with store.transaction() as tx:
        assert requeue_for_update(tx) == {  # r5: its crawl is still running (resume's)
            "results": ["r3", "r4"], "snapshots": ["s2"], "crawls": ["c2"]}
    with store.transaction() as tx:  # c2 is re-opened already: its next run is pending
        assert requeue_for_update(tx, status="noresults", crawl_id="c2")["results"] == []
    got = dict(cur.execute("SELECT id, status FROM archiveresult").fetchall())
    assert got == {"r1": "queued", "r2": "succeeded", "r3": "queued", "r4": "queued",
                   "r5": "failed", "r6": "noresults"}
    assert dict(cur.execute("SELECT id, status FROM snapshot").fetchall()) == {
        "s1": "queued", "s2": "queued", "s3": "sealed"}
    assert dict(cur.execute("SELECT id, status FROM crawl").fetchall()) == {
        "c1": "queued", "c2": "queued", "c3": "started"}
    with pytest.raises(IllegalTransition):
        requeue_for_update(cur, status="succeeded")
