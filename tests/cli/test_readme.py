"""Every `archiveflow` command the README shows, run as shown, through the installed command.

The README's shell blocks are parsed here, so an example that stops working (or a command
that does not exist) fails this test. Only what cannot run on this machine is changed:
example.com becomes the local test site, which is loopback, so the crawl is allowed private
targets the documented way (`URL_ALLOW_PRIVATE=true` in the environment); `archiveflow
serve` (runs until stopped) is left to tests/e2e/test_serve_stop.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from tests.command import ARCHIVEFLOW

README = Path(__file__).resolve().parents[2] / "README.md"
LONG_RUNNING = {("serve",)}


def readme_commands() -> list[tuple[str, list[str], str | None]]:
    """(README line, argv after `archiveflow`, stdin file or None) per command shown."""
    out = []
    in_sh = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_sh = line.strip() in ("```sh", "```bash", "```console")
            continue
        if not in_sh:
            continue
        stdin = None
        m = re.match(r"cat (\S+) \| (archiveflow .*)", line)
        if m:
            stdin, line = m.group(1), m.group(2)
        if not line.startswith("archiveflow "):
            continue
        argv = shlex.split(line, comments=True)[1:]
        if tuple(argv[:1]) in LONG_RUNNING:
            continue
        out.append((line, argv, stdin))
    return out


def test_the_readme_shows_commands() -> None:
    shown = {argv[0] for _, argv, _ in readme_commands()}
    assert {"add", "status", "list", "sql", "resume", "install", "search", "export"} <= shown


def _localise(argv: list[str], site: str) -> list[str]:
    host = site.split("://", 1)[1].split(":", 1)[0]
    out = []
    for arg in argv:
        if arg.startswith("https://example.com"):
            arg = site + arg.removeprefix("https://example.com")
        elif arg == "example.com":
            arg = host
        out.append(arg)
    return out


def test_every_readme_command_runs_as_shown(tmp_path: Path, site_url: str,
                                            prefect_api: str) -> None:
    (tmp_path / "bookmarks.html").write_text(
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n"
        f'<DT><A HREF="{site_url}/page1.html" ADD_DATE="1700000000">Page One</A>\n'
        f'<DT><A HREF="{site_url}/page2.html" ADD_DATE="1700000001">Page Two</A>\n'
        "</DL><p>\n")
    (tmp_path / "urls.txt").write_text(f"{site_url}/deep/page4.html\n")
    env = {**os.environ, "URL_ALLOW_PRIVATE": "true", "ARCHIVEFLOW_LOCK_WAIT": "60"}
    env.pop("ARCHIVEFLOW_DATA_DIR", None)  # the README's default: ./data
    ran = []
    for line, argv, stdin in readme_commands():
        args = _localise(argv, site_url)
        proc = subprocess.run(
            [ARCHIVEFLOW, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
            input=(tmp_path / stdin).read_text() if stdin else None)
        if args[0] == "update":  # re-runs what failed: the local site's 404 fails again,
            # which the README's exit codes for update say is 1 (all) or 3 (some)
            assert proc.returncode in (0, 1, 3), proc.stderr[-3000:]
            assert "updated:" in proc.stdout + proc.stderr, proc.stderr[-3000:]
        else:
            assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        ran.append(args[0])
    assert (tmp_path / "data" / "index.duckdb").is_file()
    assert (tmp_path / "exported").is_dir() and any((tmp_path / "exported").iterdir())
    assert (tmp_path / "data" / "html" / "index.html").is_file()
    listing = subprocess.run([ARCHIVEFLOW, "list", "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
    for page in ("/page1.html", "/page2.html", "/deep/page4.html"):
        assert f"{site_url}{page}" in listing, page
    assert ran.count("add") == 4  # a URL, bookmarks, stdin, --index-only

