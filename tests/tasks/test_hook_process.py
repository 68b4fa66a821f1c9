"""Pid files, liveness across PID reuse, killing whole process groups, background hooks."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
from hook_helpers import ProcGuard, fixture_hook

from archiveflow.tasks.discover import parse_hook_name
from archiveflow.tasks.hooks import (
    finalize_background,
    recover_run,
    run_hook,
    update_from_output,
    wait_background,
)
from archiveflow.tasks.process import (
    PidInfo,
    kill_process,
    process_is_alive,
    registered,
    spawn,
    unregister,
    write_pid_file,
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start(
    cmd: list[str], tmp_path: Path, guard: ProcGuard
) -> tuple[subprocess.Popen[bytes], Path]:
    popen = spawn(
        cmd, cwd=tmp_path, env=guard.env(), stdout=tmp_path / "o.log", stderr=tmp_path / "e.log"
    )
    guard.track(popen.pid, popen.pid)
    pid_file = tmp_path / "x.pid"
    ctime = psutil.Process(popen.pid).create_time()
    write_pid_file(pid_file, PidInfo(popen.pid, popen.pid, ctime, cmd, "", time.time()))
    return popen, pid_file


def test_pid_reuse_reads_as_not_alive(tmp_path: Path, proc_guard: ProcGuard) -> None:
    sleeper = subprocess.Popen(["sleep", "30"], env=proc_guard.env())
    proc_guard.track(sleeper.pid)
    try:
        real = psutil.Process(sleeper.pid).create_time()
        stale = tmp_path / "stale.pid"
        # The pid is live, but it is not the process the file was written for.
        write_pid_file(stale, PidInfo(sleeper.pid, sleeper.pid, real - 1000, ["hook"], "", 0.0))
        assert not process_is_alive(stale)
        assert not kill_process(stale, grace=0.2)  # and it must not be killed
        assert sleeper.poll() is None
        assert not stale.exists()
        good = tmp_path / "good.pid"
        write_pid_file(good, PidInfo(sleeper.pid, sleeper.pid, real, ["sleep"], "", 0.0))
        assert process_is_alive(good)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_missing_or_corrupt_pid_file(tmp_path: Path) -> None:
    assert not process_is_alive(tmp_path / "none.pid")
    (tmp_path / "bad.pid").write_text("{not json")
    assert not process_is_alive(tmp_path / "bad.pid")
    assert not kill_process(tmp_path / "bad.pid")


def test_kill_process_kills_the_group(tmp_path: Path, proc_guard: ProcGuard) -> None:
    popen, pid_file = _start(["bash", "-c", "sleep 300 & sleep 300 & wait"], tmp_path, proc_guard)
    deadline = time.monotonic() + 5
    while len(psutil.Process(popen.pid).children()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    children = [c.pid for c in psutil.Process(popen.pid).children()]
    assert process_is_alive(pid_file)
    assert kill_process(pid_file, grace=2.0)
    popen.wait(timeout=5)
    assert all(_gone(c) for c in children)
    assert not pid_file.exists()


def test_kill_process_escalates_to_sigkill(tmp_path: Path, proc_guard: ProcGuard) -> None:
    popen, pid_file = _start(
        ["bash", "-c", "trap '' TERM; sleep 300 & wait; sleep 300"], tmp_path, proc_guard
    )
    time.sleep(0.2)
    t0 = time.monotonic()
    assert kill_process(pid_file, grace=0.3)
    assert 0.3 <= time.monotonic() - t0 < 3
    assert popen.wait(timeout=5) == -9


def test_wait_background_returns_when_done(
    tmp_path: Path, snap_dir: Path, proc_guard: ProcGuard
) -> None:
    folder = tmp_path / "plugins" / "short"
    folder.mkdir(parents=True)
    hook_path = folder / "on_Snapshot__10_short.bg.sh"
    hook_path.write_text("#!/bin/sh\nsleep 0.3\necho done > out.txt\n")
    hook_path.chmod(0o755)
    hook = parse_hook_name(hook_path)
    assert hook is not None and hook.is_background and not hook.is_daemon
    run = run_hook(hook, args={}, output_dir=snap_dir, env=proc_guard.env(), timeout=10)
    proc_guard.track(run.pid, run.pgid)
    assert wait_background([run.pid_file], timeout=10) == []
    done = finalize_background(run)
    assert done.exit_code == 0 and done.kill_reason is None
    out = update_from_output(done, output_dir=snap_dir, snapshot_dir=snap_dir)
    assert out.status == "succeeded" and [f.path for f in out.output_files] == ["short/out.txt"]


def test_pid_file_from_an_earlier_process(snap_dir: Path, proc_guard: ProcGuard) -> None:
    hook = fixture_hook("daemon")
    run = run_hook(hook, args={}, output_dir=snap_dir, env=proc_guard.env(), timeout=10)
    proc_guard.track(run.pid, run.pgid)
    popen = registered(run.pid_file)
    assert popen is not None
    unregister(run.pid_file)  # as if this process had restarted
    try:
        recovered = recover_run(hook, snap_dir)
        assert recovered is not None and recovered.pid == run.pid
        assert process_is_alive(run.pid_file)
        done = finalize_background(recovered, grace=5.0)
        assert done.exit_code is None
        assert _gone(run.pid)
        out = update_from_output(hook, output_dir=snap_dir, snapshot_dir=snap_dir)
        assert out.status == "failed"
        assert out.error is not None and "exit code unknown" in out.error
    finally:
        popen.wait(timeout=5)
    assert not os.path.exists(run.pid_file)


def test_wait_background_kills_a_flooding_background_hook(
    tmp_path: Path, snap_dir: Path, proc_guard: ProcGuard
) -> None:
    folder = tmp_path / "plugins" / "loud"
    folder.mkdir(parents=True)
    hook_path = folder / "on_Snapshot__10_loud.bg.sh"
    hook_path.write_text("#!/bin/sh\nyes 'x'\n")
    hook_path.chmod(0o755)
    hook = parse_hook_name(hook_path)
    assert hook is not None
    run = run_hook(hook, args={}, output_dir=snap_dir, env=proc_guard.env(), timeout=10)
    proc_guard.track(run.pid, run.pgid)
    assert wait_background([run.pid_file], timeout=20, output_cap=1_000_000) == []
    assert run.kill_reason is not None and run.kill_reason.startswith("output too large")
    done = finalize_background(run, log_cap=100_000)
    assert done.stdout_log.stat().st_size <= 100_100
    out = update_from_output(done, output_dir=snap_dir, snapshot_dir=snap_dir)
    assert out.status == "failed" and "output too large" in (out.error or "")
