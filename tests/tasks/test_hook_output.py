"""Log capping and stderr tails, on real files and a real hook."""

from __future__ import annotations

from pathlib import Path

from hook_helpers import ProcGuard, make_hook, outcome, run_fixture

from archiveflow.store.records import parse_lines
from archiveflow.tasks.hooks import run_hook
from archiveflow.tasks.output import cap_log, read_bounded, stderr_tail


def test_cap_log_keeps_head_and_tail_on_line_boundaries(tmp_path: Path) -> None:
    log = tmp_path / "x.stdout.log"
    lines = [f'{{"type":"Tag","name":"t{i:05d}"}}' for i in range(10_000)]
    log.write_text("\n".join(lines) + "\n")
    size = log.stat().st_size
    assert not cap_log(log, cap=size)
    assert cap_log(log, cap=10_000)
    data = log.read_bytes()
    assert len(data) <= 10_000 + 100
    assert data.startswith(lines[0].encode())
    assert data.endswith((lines[-1] + "\n").encode())
    assert b"[archiveflow: log truncated, " in data
    records, errors = parse_lines(data.decode())
    assert errors == [] and len(records) > 200  # no half line survived the cuts
    assert read_bounded(log, cap=1_000_000) == data


def test_stderr_tail_is_bounded(tmp_path: Path) -> None:
    err = tmp_path / "x.stderr.log"
    err.write_bytes(b"".join(b"line %d \xff\n" % i for i in range(1000)))
    tail = stderr_tail(err)
    assert tail.splitlines()[-1].startswith("line 999")
    assert len(tail.splitlines()) == 20 and len(tail.encode()) <= 2048 + 60
    assert stderr_tail(tmp_path / "missing") == ""


def test_stderr_flood_is_killed_with_reason(
    tmp_path: Path, snap_dir: Path, proc_guard: ProcGuard
) -> None:
    hook = make_hook(tmp_path, "on_Snapshot__01_noisy.sh", "#!/bin/sh\nyes error >&2\n")
    run = run_hook(
        hook,
        args={},
        output_dir=snap_dir,
        env=proc_guard.env(),
        timeout=30,
        output_cap=2_000_000,
        log_cap=100_000,
    )
    proc_guard.track(run.pid, run.pgid)
    assert run.kill_reason is not None and "stderr.log passed 2000000 bytes" in run.kill_reason
    assert run.stderr_log.stat().st_size <= 100_000 + 100
    out = outcome(run, snap_dir)
    assert out.status == "failed" and out.error is not None and "error" in out.error


def test_noop_hook_reports_noresults(snap_dir: Path, proc_guard: ProcGuard) -> None:
    out = outcome(run_fixture("noop", snap_dir, proc_guard), snap_dir)
    assert out.status == "noresults" and out.output_files == [] and out.output_size == 0
