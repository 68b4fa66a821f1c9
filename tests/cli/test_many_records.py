"""Records are data (issue 14): a snapshot hook that prints 1,000,000 Tag records has every
one of them loaded (the installed command, a real crawl); the human log is cut, the data is
not. A hook stopped at the runaway limit fails, naming how many records were kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pytest

from archiveflow.tasks.discover import parse_hook_name
from archiveflow.tasks.hooks import run_hook, update_from_output
from archiveflow.tasks.output import LOG_CAP
from tests.flows.conftest import run_cli

PLUGINS = Path(__file__).resolve().parent / "plugins"
COUNT = 1_000_000


def _rows(data: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.timeout(900)
def test_a_million_records_from_one_hook_are_all_loaded(tmp_path: Path, site_url: str,
                                                       prefect_api: str) -> None:
    data = tmp_path / "data"
    began = time.monotonic()
    proc = run_cli(data, "add", "--allow-private", "--plugins", "manytags",
                   "--config", f"PLUGINS_PATH={PLUGINS}", f"{site_url}/page1.html",
                   timeout=900)
    print(f"{COUNT:,} Tag records through `add`: {time.monotonic() - began:.1f}s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(data, "SELECT status, output_str FROM archiveresult") == [
        ("succeeded", f"{COUNT} tags")]
    assert _rows(data, "SELECT count(*), count(DISTINCT tag), min(tag), max(tag) "
                       "FROM snapshot_tag") == [(COUNT, COUNT, "t0000000", f"t{COUNT - 1:07d}")]
    assert _rows(data, "SELECT count(*) FROM record_error") == [(0,)]
    (log,) = data.glob("users/*/snapshots/*/*/*/manytags/on_Snapshot__50_manytags.stdout.log")
    assert log.stat().st_size <= LOG_CAP + 200  # the log for people is cut; the data is not
    assert b"[archiveflow: log truncated, " in log.read_bytes()


def test_a_runaway_hook_is_stopped_and_fails_naming_the_records_kept(tmp_path: Path) -> None:
    folder = tmp_path / "plugins" / "manytags"
    folder.mkdir(parents=True)
    src = PLUGINS / "manytags" / "on_Snapshot__50_manytags.py"
    path = folder / src.name
    path.write_text(src.read_text())
    path.chmod(0o755)
    hook = parse_hook_name(path)
    assert hook is not None
    snap = tmp_path / "snap"
    # 10M records ≈ 330 MB of stdout; stopped at 3 MB: the run fails, and says what it kept.
    run = run_hook(hook, args={}, output_dir=snap, timeout=120,
                   env={**os.environ, "MANYTAGS_COUNT": "10000000"},
                   records_cap=3_000_000, log_cap=1_000_000)
    assert run.kill_reason is not None and "stdout.log passed 3000000 bytes" in run.kill_reason
    out = update_from_output(run, output_dir=snap, snapshot_dir=snap)
    assert out.status == "failed"
    kept = len(out.other_records)
    assert kept >= 3_000_000 // 34  # 33 bytes a record: every record up to the cap is kept
    assert sum(len(c) for c in out.other_records.chunks(10_000)) == kept
    assert f"{kept} records it printed before it was stopped were kept" in (out.error or "")


def test_records_past_the_text_limit_are_data_and_text_past_it_is_not(tmp_path: Path) -> None:
    folder = tmp_path / "plugins" / "manytags"
    folder.mkdir(parents=True)
    src = PLUGINS / "manytags" / "on_Snapshot__50_manytags.py"
    path = folder / src.name
    path.write_text(src.read_text())
    path.chmod(0o755)
    hook = parse_hook_name(path)
    assert hook is not None
    snap = tmp_path / "snap"
    # 100k records ≈ 3.3 MB of stdout, three times the limit on text: all kept, not killed.
    run = run_hook(hook, args={}, output_dir=snap, timeout=120,
                   env={**os.environ, "MANYTAGS_COUNT": "100000"},
                   output_cap=1_000_000, log_cap=500_000)
    assert run.kill_reason is None and run.exit_code == 0
    out = update_from_output(run, output_dir=snap, snapshot_dir=snap)
    assert out.status == "succeeded" and len(out.other_records) == 100_000
    # Text that is no record is stopped at the limit.
    text = folder / "on_Snapshot__51_text.sh"
    text.write_text("#!/bin/sh\nyes 'not a record'\n")
    text.chmod(0o755)
    text_hook = parse_hook_name(text)
    assert text_hook is not None
    run = run_hook(text_hook, args={}, output_dir=snap, timeout=120, env=dict(os.environ),
                   output_cap=1_000_000, log_cap=500_000)
    assert run.kill_reason is not None and "text that is no record" in run.kill_reason
