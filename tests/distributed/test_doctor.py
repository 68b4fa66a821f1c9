"""`archiveflow doctor` names the mode and each part's answer; `worker` refuses the
embedded index with what to do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.command import ARCHIVEFLOW
from tests.distributed.conftest import new_catalog
from tests.distributed.pg import PgServer


def _run(data: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ARCHIVEFLOW_", "PREFECT_API_URL"))}
    return subprocess.run([ARCHIVEFLOW, "--data-dir", str(data), *args], capture_output=True,
                          text=True, timeout=120, env={**clean, **env})


def test_doctor_embedded_and_shared(pg: PgServer, tmp_path: Path) -> None:
    embedded = _run(tmp_path / "one", "doctor", env={})
    assert embedded.returncode == 0, embedded.stderr
    assert "embedded index" in embedded.stdout

    catalog = new_catalog(pg)
    env = {"ARCHIVEFLOW_CATALOG": catalog, "ARCHIVEFLOW_STORAGE": str(tmp_path / "lake")}
    (tmp_path / "shared").mkdir()
    (tmp_path / "lake").mkdir()
    shared = _run(tmp_path / "shared", "doctor", env=env)
    assert shared.returncode == 0, shared.stdout + shared.stderr
    lines = shared.stdout.splitlines()
    assert any(ln.startswith("ok   mode") and "shared index" in ln for ln in lines)
    assert any(ln.startswith("ok   catalog") and "PostgreSQL" in ln for ln in lines)
    assert any(ln.startswith(("ok   index", "note index")) for ln in lines)

    broken = _run(tmp_path / "shared", "doctor",
                  env={**env, "ARCHIVEFLOW_CATALOG": catalog.replace("/lake", "/missing")})
    assert broken.returncode == 1
    assert any(ln.startswith("FAIL catalog") and "does not exist" in ln
               for ln in broken.stdout.splitlines())


def test_worker_needs_the_shared_index(tmp_path: Path) -> None:
    proc = _run(tmp_path, "worker", env={})
    assert proc.returncode == 2
    assert "needs the shared index: set ARCHIVEFLOW_CATALOG" in proc.stderr
