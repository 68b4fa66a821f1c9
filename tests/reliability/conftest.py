"""Fixtures of the fault-injection suite: the session's Prefect API, the CLI as a real
process (run to the end, or started and killed), and what a data folder left behind.

The random kill points come from one seed per run, printed in the report header; set
RELIABILITY_SEED to replay a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pytest

from tests.command import ARCHIVEFLOW

REPO = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).resolve().parent / "plugins"
SEED: int = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(1 << 31))
FINAL = ("succeeded", "failed", "skipped", "noresults")


def pytest_report_header() -> str:
    return f"reliability seed: {SEED} (replay with RELIABILITY_SEED={SEED})"


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI process: ours, a bounded lock wait, and `extra`."""
    return {**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "120", **(extra or {})}


def start_cli(data_dir: Path, *args: str, env: Mapping[str, str] | None = None,
              stdin: str | None = None) -> subprocess.Popen[str]:
    """Start `archiveflow --data-dir DATA ARGS…` as a real process (not waited for)."""
    proc = subprocess.Popen(
        [ARCHIVEFLOW, "--data-dir", str(data_dir), *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(env), cwd=REPO)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    return proc


def run_cli(data_dir: Path, *args: str, env: Mapping[str, str] | None = None,
            stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end."""
    return subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(data_dir), *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, env=cli_env(env),
        cwd=REPO)


def kill9(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the CLI process only (its hooks, in their own sessions, live on)."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)


def hook_processes(data_dir: Path) -> list[psutil.Process]:
    """Live processes of hooks of this data folder: cwd inside it, or its DATA_DIR in env.

    Stricter than tests/flows' helper, which counts any ARCHIVEFLOW_RUN_ID on the machine
    (other test sessions' hooks included).
    """
    root = str(data_dir.resolve())
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.cwd().startswith(root + os.sep) or p.environ().get("DATA_DIR") == root:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def wait_no_hooks(data_dir: Path, timeout: float = 10.0) -> list[psutil.Process]:
    """Hook processes still alive after up to `timeout` s (exits in flight settle)."""
    deadline = time.monotonic() + timeout
    while True:
        left = hook_processes(data_dir)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def query(data_dir: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows from the index, opened read-only (no archiveflow may be running)."""
    con = duckdb.connect(str(data_dir / "index.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="session")
def rng() -> random.Random:
    return random.Random(SEED)
