"""Helpers for the hook runtime tests: a guard that finds processes a test left alive, and
access to the hook fixtures under tests/fixtures/plugins."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

from archiveflow.store.ids import new_id
from archiveflow.tasks.discover import Hook, parse_hook_name
from archiveflow.tasks.hooks import HookOutcome, HookRun, run_hook, update_from_output

FIXTURE_PLUGINS = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
TOKEN_ENV = "ARCHIVEFLOW_TEST_TOKEN"


class ProcGuard:
    """Tracks the processes a test started (by pid, by process group, and by an env token
    every hook inherits) and reports the ones still alive."""

    def __init__(self) -> None:
        self.token = new_id()
        self.pids: set[int] = set()
        self.pgids: set[int] = set()

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for hooks that carries this test's token."""
        return {**os.environ, TOKEN_ENV: self.token, **extra}

    def track(self, pid: int, pgid: int | None = None) -> None:
        self.pids.add(pid)
        if pgid is not None:
            self.pgids.add(pgid)

    def track_pid_file(self, path: Path) -> int:
        pid = int(path.read_text().strip())
        self.track(pid)
        return pid

    def _has_token(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f"{TOKEN_ENV}={self.token}".encode() in f.read()
        except OSError:
            return False

    def leftovers(self) -> list[int]:
        alive: set[int] = set()
        for name in os.listdir("/proc"):
            if name.isdigit() and self._has_token(int(name)):
                alive.add(int(name))
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE and self._has_token(pid):
                    alive.add(pid)
        for pgid in self.pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, 0)
                for p in psutil.process_iter():
                    with contextlib.suppress(psutil.Error, OSError):
                        if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                            alive.add(p.pid)
        alive.discard(os.getpid())
        return sorted(alive)


def fixture_hook(plugin: str) -> Hook:
    """The one hook of a fixture plugin under tests/fixtures/plugins/."""
    folder = FIXTURE_PLUGINS / plugin
    hooks = [h for p in sorted(folder.iterdir()) if (h := parse_hook_name(p)) is not None]
    assert len(hooks) == 1, hooks
    return hooks[0]


def run_fixture(
    hook: Hook | str,
    snap_dir: Path,
    guard: ProcGuard,
    timeout: float = 30.0,
    grace: float = 1.0,
) -> HookRun:
    """Run a hook (a fixture plugin's name, or a Hook) on a snapshot folder, tracked."""
    if isinstance(hook, str):
        hook = fixture_hook(hook)
    run = run_hook(
        hook,
        args={"url": "https://example.com", "snapshot_id": "s1"},
        output_dir=snap_dir,
        env=guard.env(SNAP_DIR=str(snap_dir)),
        timeout=timeout,
        grace=grace,
        extra_context={"snapshot_id": "s1", "crawl_id": "c1", "snapshot_depth": 0},
    )
    guard.track(run.pid, run.pgid)
    return run


def outcome(run: HookRun, snap_dir: Path) -> HookOutcome:
    """update_from_output of a run whose output folder is the snapshot folder."""
    return update_from_output(run, output_dir=snap_dir, snapshot_dir=snap_dir)


def make_hook(tmp_path: Path, name: str, body: str, plugin: str = "tmp") -> Hook:
    """Write an executable hook file under tmp_path/plugins/<plugin>/ and parse it."""
    folder = tmp_path / "plugins" / plugin
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    path.chmod(0o755)
    hook = parse_hook_name(path)
    assert hook is not None
    return hook
