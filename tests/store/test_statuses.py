"""The status sets have one source (store/records.py) and two mirrors that must agree:
store/transitions.STATUSES and the CHECK constraints of a real index built from schema.sql."""

from __future__ import annotations

import re
from pathlib import Path

from archiveflow.store import transitions
from archiveflow.store.db import Store
from archiveflow.store.records import FINAL_RESULT_STATUSES, TABLE_STATUSES


def _check_values(store: Store, table: str) -> set[str]:
    rows = store.cursor().execute(
        "SELECT constraint_text FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'CHECK' AND constraint_text ILIKE '%status%'",
        [table]).fetchall()
    assert len(rows) == 1, rows
    return set(re.findall(r"'([a-z]+)'", rows[0][0]))


def test_transitions_mirror_the_record_literals() -> None:
    assert transitions.STATUSES == TABLE_STATUSES


def test_schema_checks_mirror_the_record_literals(tmp_path: Path) -> None:
    store = Store(tmp_path / "index.duckdb")
    try:
        for table, statuses in TABLE_STATUSES.items():
            assert _check_values(store, table) == set(statuses), table
    finally:
        store.close()


def test_every_final_status_is_a_result_status() -> None:
    assert set(FINAL_RESULT_STATUSES) < set(TABLE_STATUSES["archiveresult"])
    assert not {"queued", "started"} & set(FINAL_RESULT_STATUSES)
