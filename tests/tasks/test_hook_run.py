"""run_hook + update_from_output against real hook processes (tests/fixtures/plugins)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from hook_helpers import ProcGuard, fixture_hook, make_hook, outcome, run_fixture

from archiveflow.store.records import BinaryRecord, SnapshotRecord, TagRecord
from archiveflow.tasks.discover import HookLaunchError, build_command
from archiveflow.tasks.hooks import (
    HookPaths,
    finalize_background,
    process_is_alive,
    snapshot_files,
    update_from_output,
    wait_background,
)
from archiveflow.tasks.output import LOG_CAP


def test_succeeding_hook_with_files(snap_dir: Path, proc_guard: ProcGuard) -> None:
    run = run_fixture("ok_files", snap_dir, proc_guard)
    out = outcome(run, snap_dir)

    assert run.exit_code == 0 and not run.timed_out and run.kill_reason is None
    assert out.status == "succeeded"
    assert out.output_str == "ok_files/index.html"
    assert [(f.path, f.mimetype) for f in out.output_files] == [
        ("ok_files/data/a.txt", "text/plain"),
        ("ok_files/index.html", "text/html"),
    ]
    assert out.output_size == 5 + len("<html><body>https://example.com</body></html>")
    assert [type(r) for r in out.other_records] == [TagRecord, SnapshotRecord]
    assert out.record_errors == []
    seen = out.output_json
    assert isinstance(seen, dict)
    assert seen["argv"] == ["--url=https://example.com", "--snapshot-id=s1"]
    assert seen["exe"] == sys.executable  # `#!/usr/bin/env python3` ran without the wrapper
    assert seen["cwd"] == str(snap_dir / "ok_files")
    assert seen["context"]["plugin"] == "ok_files"
    assert seen["context"]["hook_name"] == "on_Snapshot__10_ok_files"
    assert seen["context"]["snapshot_id"] == "s1"
    assert not run.pid_file.exists()
    assert run.paths.exit_file.exists()
    assert out.started_at is not None and out.ended_at is not None

    # The .sh line reruns the hook by hand.
    sh = run.cmd_file.read_text()
    assert "cd " in sh and "'--url=https://example.com'" in sh or "--url=https://example.com" in sh
    rerun = subprocess.run(["sh", str(run.cmd_file)], capture_output=True, text=True, timeout=30)
    assert rerun.returncode == 0 and '"succeeded"' in rerun.stdout

    # The result can be learned again from the folder alone (no HookRun).
    again = update_from_output(run.hook, output_dir=snap_dir, snapshot_dir=snap_dir)
    assert again.status == "succeeded" and again.exit_code == 0


def test_garbage_and_invalid_utf8_between_records(snap_dir: Path, proc_guard: ProcGuard) -> None:
    out = outcome(run_fixture("garbage", snap_dir, proc_guard), snap_dir)
    assert out.status == "succeeded"
    assert out.output_str == "garbage/x"
    assert [r.name for r in out.other_records if isinstance(r, TagRecord)] == ["one", "café"]


def test_exit_3_fails_with_stderr(snap_dir: Path, proc_guard: ProcGuard) -> None:
    run = run_fixture("exit3", snap_dir, proc_guard)
    out = outcome(run, snap_dir)
    assert out.status == "failed" and out.exit_code == 3
    assert out.error is not None
    assert "exited 3 after" in out.error
    assert "boom: could not reach example.invalid" in out.error
    rebuilt = update_from_output(
        HookPaths(snap_dir / "exit3", run.hook.name), output_dir=snap_dir, snapshot_dir=snap_dir
    )
    assert rebuilt.status == "failed" and rebuilt.exit_code == 3


def test_exit_10_is_skipped(snap_dir: Path, proc_guard: ProcGuard) -> None:
    out = outcome(run_fixture("exit10", snap_dir, proc_guard), snap_dir)
    assert out.status == "skipped" and out.exit_code == 10 and out.error is None


def test_timeout_kills_group_including_child_ignoring_sigterm(
    snap_dir: Path, proc_guard: ProcGuard
) -> None:
    t0 = time.monotonic()
    run = run_fixture("slow", snap_dir, proc_guard, timeout=1.5, grace=0.5)
    elapsed = time.monotonic() - t0
    child = proc_guard.track_pid_file(snap_dir / "slow" / "child.pid")
    out = outcome(run, snap_dir)

    assert (snap_dir / "slow" / "child.ready").exists()  # it did ignore SIGTERM in time
    assert run.timed_out
    assert 1.5 <= elapsed < 5
    assert out.status == "failed"  # even though it printed "succeeded" first
    assert out.error is not None and out.error.startswith("timed out after 1.5s")
    assert out.exit_code is not None and out.exit_code < 0
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_setsid_grandchild_is_killed_after_exit(snap_dir: Path, proc_guard: ProcGuard) -> None:
    run = run_fixture("daemonize", snap_dir, proc_guard)
    grandchild = proc_guard.track_pid_file(snap_dir / "daemonize" / "grandchild.pid")
    assert run.exit_code == 0
    assert run.leftovers_killed
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"
    out = outcome(run, snap_dir)
    assert out.status == "succeeded"  # exit 0 + a new file (grandchild.pid)


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_daemon_background_hook_reports_on_sigterm(snap_dir: Path, proc_guard: ProcGuard) -> None:
    t0 = time.monotonic()
    run = run_fixture("daemon", snap_dir, proc_guard)
    assert time.monotonic() - t0 < 1.0  # started, not waited for
    assert run.hook.is_background and run.hook.is_daemon
    info = json.loads(run.pid_file.read_text())
    assert info["pid"] == run.pid and info["pgid"] == run.pid and info["create_time"] > 0
    assert process_is_alive(run.pid_file)
    _wait_for(lambda: b"ready" in run.stdout_log.read_bytes())
    assert wait_background([run.pid_file], timeout=0.2) == [run.pid_file]

    done = finalize_background(run, grace=5.0)
    assert done.stopped and done.exit_code == 0 and done.kill_reason is None
    assert not run.pid_file.exists()
    out = outcome(done, snap_dir)
    assert out.status == "succeeded"
    assert out.output_str == "daemon/service.txt"
    assert [f.path for f in out.output_files] == ["daemon/service.txt"]


def test_finite_background_hook_still_running_at_cleanup_fails(
    snap_dir: Path, proc_guard: ProcGuard
) -> None:
    hook = dataclasses.replace(fixture_hook("daemon"), is_daemon=False)
    run = run_fixture(hook, snap_dir, proc_guard)
    _wait_for(lambda: b"ready" in run.stdout_log.read_bytes())
    done = finalize_background(run, grace=5.0)
    out = outcome(done, snap_dir)
    assert out.status == "failed"  # it printed succeeded on SIGTERM, but was killed
    assert out.error is not None and "still running at cleanup" in out.error


class _RssSampler(threading.Thread):
    """Samples this process's RSS every 5 ms while a hook runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.baseline = self.me.memory_info().rss
        self.peak = self.baseline
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.me.memory_info().rss)


def test_200mb_of_stdout_is_capped(snap_dir: Path, proc_guard: ProcGuard) -> None:
    sampler = _RssSampler()
    sampler.start()
    try:
        run = run_fixture("flood", snap_dir, proc_guard)
        out = outcome(run, snap_dir)
    finally:
        sampler.stop.set()
        sampler.join()

    size = run.stdout_log.stat().st_size
    assert size <= LOG_CAP + 200
    with open(run.stdout_log, "rb") as f:
        f.seek(LOG_CAP // 2 - 4096)
        assert b"[archiveflow: log truncated" in f.read(8192)
    if run.kill_reason is not None:
        assert out.status == "failed" and "output too large" in (out.error or "")
    else:
        assert out.status == "succeeded"
    # Reading the capped log costs at most ~10 MB (+ its decoded copy), never 200 MB.
    assert sampler.peak - sampler.baseline < 40 * 1024 * 1024


class _Interrupted(Exception):
    pass


def test_interrupted_run_leaves_no_process(snap_dir: Path, proc_guard: ProcGuard) -> None:
    def raise_(signum, frame):
        raise _Interrupted

    old = signal.signal(signal.SIGALRM, raise_)
    signal.setitimer(signal.ITIMER_REAL, 0.8)
    try:
        with pytest.raises(_Interrupted):
            run_fixture("slow", snap_dir, proc_guard, timeout=60, grace=0.5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    child = snap_dir / "slow" / "child.pid"
    if child.exists():
        proc_guard.track_pid_file(child)
    # proc_guard's teardown fails the test if the hook or its child survived.


def test_symlink_and_paths_outside_snapshot_are_refused(
    snap_dir: Path, proc_guard: ProcGuard
) -> None:
    out = outcome(run_fixture("escape", snap_dir, proc_guard), snap_dir)
    assert not os.path.lexists(snap_dir / "escape" / "passwd_link")
    assert Path("/etc/passwd").exists()
    paths = [f.path for f in out.output_files]
    assert paths == ["escape/inside_link", "escape/real.txt"]
    assert "passwd" not in out.output_str
    assert out.error is not None
    assert "removed symlink passwd_link -> /etc/passwd" in out.error
    assert "refused output file '../../../../etc/passwd'" in out.error
    assert "refused output_str" in out.error


def test_unknown_types_and_wrong_field_types(snap_dir: Path, proc_guard: ProcGuard) -> None:
    out = outcome(run_fixture("badrecords", snap_dir, proc_guard), snap_dir)
    assert out.status == "noresults" and out.output_str == "nothing to save"
    assert [type(r) for r in out.other_records] == [BinaryRecord]
    reasons = [e.error for e in out.record_errors]
    assert len(reasons) == 5
    assert any("unknown record type 'Bogus'" in r for r in reasons)
    assert any(r.startswith("Snapshot record invalid") and "depth" in r for r in reasons)


def test_non_executable_sh_runs_with_bash(snap_dir: Path, proc_guard: ProcGuard) -> None:
    out = outcome(run_fixture("shellext", snap_dir, proc_guard), snap_dir)
    assert out.status == "succeeded"
    assert [f.path for f in out.output_files] == ["shellext/made.txt"]


@pytest.mark.parametrize(
    ("body", "status", "error_part"),
    [
        ("exit 0\n", "noresults", None),
        ("echo hi > f.txt\n", "succeeded", None),
        ('echo \'{"type":"ArchiveResult","status":"failed","error":"nope"}\'\n', "failed", "nope"),
        ('echo \'{"type":"ArchiveResult","status":"succeeded"}\'; exit 1\n', "failed", "exited 1"),
        ('echo \'{"type":"ArchiveResult","status":"succeeded"}\'; exit 10\n', "skipped", None),
        ("kill -9 $$\n", "failed", "killed by signal SIGKILL"),
    ],
)
def test_inferred_status(
    tmp_path: Path,
    snap_dir: Path,
    proc_guard: ProcGuard,
    body: str,
    status: str,
    error_part: str | None,
) -> None:
    hook = make_hook(tmp_path, "on_Snapshot__01_case.sh", "#!/bin/sh\n" + body)
    out = outcome(run_fixture(hook, snap_dir, proc_guard), snap_dir)
    assert out.status == status
    if error_part:
        assert out.error is not None and error_part in out.error


def test_started_files_snapshot_limits_listing(
    tmp_path: Path, snap_dir: Path, proc_guard: ProcGuard
) -> None:
    hook = make_hook(tmp_path, "on_Snapshot__01_more.sh", "#!/bin/sh\necho new > new.txt\n")
    (snap_dir / "tmp").mkdir()
    (snap_dir / "tmp" / "old.txt").write_text("old")
    before = snapshot_files(snap_dir / "tmp")
    run = run_fixture(hook, snap_dir, proc_guard)
    out = update_from_output(
        run, output_dir=snap_dir, snapshot_dir=snap_dir, started_files_snapshot=before
    )
    assert [f.path for f in out.output_files] == ["tmp/new.txt"]


def test_build_command_interpreters(tmp_path: Path) -> None:
    def write(name: str, text: str, mode: int = 0o755) -> Path:
        p = tmp_path / name
        p.write_text(text)
        p.chmod(mode)
        return p

    for shebang in ("#!/usr/bin/env python3", "#!/usr/bin/env python", "#!/usr/bin/env python3.11"):
        p = write("a.py", shebang + "\n")
        assert build_command(p) == [sys.executable, str(p)]
    p = write("b.sh", "#!/bin/sh\n")
    assert build_command(p) == [str(p)]
    p = write("c.js", "#!/usr/bin/env node\n")
    assert build_command(p) == [str(p)]
    p = write("d.js", "console.log(1)\n", 0o644)
    assert build_command(p) == ["node", str(p)]
    p = write("e.py", "print(1)\n", 0o644)
    assert build_command(p) == [sys.executable, str(p)]
    with pytest.raises(HookLaunchError):
        build_command(write("f.rb", "puts 1\n", 0o644))


def test_missing_interpreter_is_a_launch_error(
    tmp_path: Path, snap_dir: Path, proc_guard: ProcGuard
) -> None:
    hook = make_hook(tmp_path, "on_Snapshot__01_nointerp.sh", "#!/nonexistent/interp\n")
    with pytest.raises(HookLaunchError, match="cannot start"):
        run_fixture(hook, snap_dir, proc_guard)
    assert not (snap_dir / "tmp" / "on_Snapshot__01_nointerp.pid").exists()


def test_records_past_the_log_cap_are_all_kept(tmp_path: Path, snap_dir: Path,
                                               proc_guard: ProcGuard) -> None:
    # ~16 MB of records: the human log is cut to head and tail, the data is not.
    hook = make_hook(tmp_path, "on_Snapshot__50_many.py", (
        "#!/usr/bin/env python3\nimport json, sys\n"
        "w = sys.stdout.write\n"
        "for i in range(250_000):\n"
        "    w(json.dumps({'type': 'Tag', 'name': f'tag-{i:07d}-' + 'x' * 30}) + '\\n')\n"
        "w(json.dumps({'type': 'ArchiveResult', 'status': 'succeeded'}) + '\\n')\n"))
    run = run_fixture(hook, snap_dir, proc_guard, timeout=120)
    out = outcome(run, snap_dir)
    assert run.stdout_log.stat().st_size <= LOG_CAP + 200  # cut for humans
    names = [r.name for r in out.other_records]
    assert len(names) == 250_000 and len(set(names)) == 250_000
    assert names[0] == "tag-0000000-" + "x" * 30 and names[-1].startswith("tag-0249999-")
    assert out.status == "succeeded" and not out.record_errors
    assert [f.path for f in out.output_files] == []  # the records file is the runner's


def test_a_planted_records_file_is_not_read(tmp_path: Path, snap_dir: Path,
                                            proc_guard: ProcGuard) -> None:
    hook = make_hook(tmp_path, "on_Snapshot__50_plant.py", (
        "#!/usr/bin/env python3\nimport json, pathlib\n"
        "pathlib.Path('on_Snapshot__50_plant.records.jsonl').write_text("
        "json.dumps({'type': 'Tag', 'name': 'planted'}) + '\\n')\n"
        "print(json.dumps({'type': 'Tag', 'name': 'printed'}))\n"))
    out = outcome(run_fixture(hook, snap_dir, proc_guard), snap_dir)
    assert [r.name for r in out.other_records] == ["printed"]
