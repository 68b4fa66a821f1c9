"""screenshot (a background hook): a real headless Chromium against the local site."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from pluginrun import hook_path, run_hook

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    return struct.unpack(">II", data[16:24])


def procs_using(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions `folder` (Chromium's profile is in it)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in arg for arg in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@needs_chromium
def test_screenshot(tmp_path: Path, site_url: str) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = run_hook("screenshot", tmp_path / "snap", [f"--url={site_url}/"], {"TMPDIR": str(tmp)})
    assert run.rc == 0 and run.result.status == "succeeded", run.stdout + run.stderr
    assert run.result.output_str == "screenshot/screenshot.png"
    assert png_size(run.cwd / "screenshot.png") == (1280, 900)
    assert list(tmp.iterdir()) == [], "the temporary Chromium profile is removed"


@needs_chromium
def test_screenshot_connection_refused(tmp_path: Path, closed_port: int) -> None:
    run = run_hook("screenshot", tmp_path / "snap", [f"--url=http://127.0.0.1:{closed_port}/"])
    assert run.rc == 1 and run.result.status == "failed"
    assert "ERR_CONNECTION_REFUSED" in (run.result.error or "")
    assert not (run.cwd / "screenshot.png").exists(), "no picture of Chromium's error page"


def test_screenshot_without_chromium(tmp_path: Path, site_url: str) -> None:
    env = {"CHROMIUM_BINARY": str(tmp_path / "no-chromium"), "PATH": str(tmp_path)}
    run = run_hook("screenshot", tmp_path / "snap", [f"--url={site_url}/"], env)
    assert run.rc == 1 and run.result.status == "failed"
    assert run.result.output_str == "chromium not found: run archiveflow install"


@needs_chromium
def test_screenshot_sigterm_kills_chromium(tmp_path: Path, site_url: str) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cwd = tmp_path / "snap" / "screenshot"
    cwd.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(tmp), "SNAP_DIR": str(cwd.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-S", str(hook_path("screenshot")), f"--url={site_url}/"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not procs_using(tmp) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs_using(tmp), "chromium never started"
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    assert '"status": "failed"' in out and "interrupted" in out
    time.sleep(0.2)
    assert procs_using(tmp) == [], "chromium outlived the hook"
    assert list(tmp.iterdir()) == []
