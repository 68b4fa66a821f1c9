"""End-to-end fixtures: the installed `archiveflow` against its own local Prefect server.

These tests never use the session's `prefect_api` harness: what they check is the server
archiveflow starts per data folder (auth, UI, lifecycle). So each command gets an
environment without PREFECT_* settings, and a template cache of its own (seeded read-only
from the user's pre-migrated DB when there is one: a fresh migration costs ~30 s)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.command import ARCHIVEFLOW

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def local_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """os.environ minus Prefect settings, with a private XDG cache; no idle exit by default."""
    from archiveflow.flows.prefect_server import _template_path

    real = _template_path()
    cache = tmp_path_factory.mktemp("e2e-cache")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "_ARCHIVEFLOW"))}
    env.update(XDG_CACHE_HOME=str(cache), ARCHIVEFLOW_PREFECT_IDLE_EXIT="0",
               ARCHIVEFLOW_LOCK_WAIT="60")
    if real.exists():
        mine = cache / real.relative_to(real.parents[1])
        mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, mine)
        memo = real.with_suffix(".memo_store.toml")
        if memo.exists():
            shutil.copyfile(memo, mine.with_suffix(".memo_store.toml"))
    return env


def af(data: Path, *args: str, env: dict[str, str], timeout: float = 300
       ) -> subprocess.CompletedProcess[str]:
    """Run `archiveflow --data-dir DATA ARGS…` as a user does."""
    return subprocess.run([ARCHIVEFLOW, "--data-dir", str(data), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def status(data: Path, env: dict[str, str]) -> dict[str, Any]:
    """`archiveflow server status --json`."""
    proc = af(data, "server", "status", "--json", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def secret(data: Path) -> str:
    """The data folder's API auth string, as the owner reads it."""
    return (data / "prefect" / "auth_string").read_text().strip()


def api(url: str, *, body: Any = None, auth: str | None = None, method: str | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """One request to the local server: (status, JSON body or text, response headers)."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, code, got = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, code, got = e.read(), e.code, dict(e.headers)
    try:
        return code, json.loads(raw), got
    except ValueError:
        return code, raw.decode(errors="replace"), got
