"""Fixtures for flow tests: one Prefect API for the whole session, a CLI runner."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil

from tests.command import ARCHIVEFLOW


def run_cli(data_dir: Path, *args: str, stdin: str | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `archiveflow --data-dir DATA ARGS…` as a real process."""
    return subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(data_dir), *args],
        input=stdin, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60", **(env or {})},
        cwd=Path(__file__).resolve().parents[2],
    )


def hook_processes(data_dir: Path) -> list[psutil.Process]:
    """Live processes started for hooks of this data folder (by cwd or DATA_DIR env)."""
    root = str(data_dir.resolve())
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
            if p.cwd().startswith(root) or (
                    "ARCHIVEFLOW_RUN_ID" in env and env.get("DATA_DIR") == root):
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        except (psutil.Error, OSError):
            continue
    return found
