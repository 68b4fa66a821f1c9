"""Fixtures for the plugin tests: run a hook on a fresh snapshot folder, a closed port."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pluginrun import HookRun, run_hook


@pytest.fixture
def hook(tmp_path: Path) -> Callable[..., HookRun]:
    """`hook(plugin, url=..., **env)`: run a Snapshot hook on a fresh snapshot folder."""
    snap = tmp_path / "snap"

    def _run(plugin: str, url: str, *extra: str, depth: int = 0, **env: Any) -> HookRun:
        args = [f"--url={url}", "--snapshot-id=snap-1", "--crawl-id=crawl-1", f"--depth={depth}"]
        return run_hook(plugin, snap, [*args, *extra], {k: str(v) for k, v in env.items()})

    return _run


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
