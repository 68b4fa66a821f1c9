"""Run plugin hooks by hand, as a user would from a shell: a real process, cwd = the hook's
output folder, SNAP_DIR and friends in the environment, JSONL read back from stdout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from archiveflow.store.records import ArchiveResultRecord, Record, SnapshotRecord, parse_lines

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"


@dataclass
class HookRun:
    """What one hook process left: exit code, parsed records, raw output, its folder."""

    rc: int
    stdout: str
    stderr: str
    cwd: Path
    seconds: float
    records: list[Record] = field(default_factory=list)

    @property
    def results(self) -> list[ArchiveResultRecord]:
        return [r for r in self.records if isinstance(r, ArchiveResultRecord)]

    @property
    def result(self) -> ArchiveResultRecord:
        """The one ArchiveResult the hook must print."""
        assert len(self.results) == 1, f"expected one ArchiveResult:\n{self.stdout}{self.stderr}"
        return self.results[0]

    @property
    def snapshots(self) -> list[SnapshotRecord]:
        return [r for r in self.records if isinstance(r, SnapshotRecord)]


def hook_path(plugin: str) -> Path:
    """The single hook executable of a plugin folder."""
    hooks = sorted((PLUGINS_DIR / plugin).glob("on_*"))
    assert len(hooks) == 1, hooks
    return hooks[0]


def run_hook(
    plugin: str,
    snap_dir: Path,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    by_shebang: bool = False,
    timeout: float = 60,
) -> HookRun:
    """Run `plugins/<plugin>/on_*` with cwd `<snap_dir>/<plugin>/` and return what it left.

    Runs under this interpreter with -S unless `by_shebang`: hooks are stdlib-only, so they
    need no site-packages, and skipping `site` (with this venv's editable-install finder) cuts
    start-up from ~150 ms to ~40 ms; the shebang's `env python3` may be a slow wrapper script
    here. Every record printed must validate against store.records.
    """
    path = hook_path(plugin)
    cwd = snap_dir / plugin
    cwd.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "SNAP_DIR": str(snap_dir),
        "CRAWL_DIR": str(snap_dir.parent),
        "DATA_DIR": str(snap_dir.parent),
        **(env or {}),
    }
    cmd = [str(path)] if by_shebang else [sys.executable, "-S", str(path)]
    started = time.monotonic()
    proc = subprocess.run(
        [*cmd, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    records, errors = parse_lines(proc.stdout)
    assert not errors, f"invalid records from {plugin}: {errors}"
    return HookRun(
        proc.returncode, proc.stdout, proc.stderr, cwd, time.monotonic() - started, records
    )
