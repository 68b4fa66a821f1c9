"""Fixtures for the hook runtime tests: real hook processes, and a guard that fails a test
that leaves any of them alive."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hook_helpers import ProcGuard

from archiveflow.store.ids import new_id


@pytest.fixture(autouse=True)
def proc_guard() -> Iterator[ProcGuard]:
    """Every test here must leave no process of its hooks alive."""
    guard = ProcGuard()
    yield guard
    left = guard.leftovers()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left alive: {left}"


@pytest.fixture
def snap_dir(tmp_path: Path) -> Path:
    """An empty snapshot folder."""
    d = tmp_path / "snapshots" / "20261127" / "example.com" / new_id()
    d.mkdir(parents=True)
    return d
