"""No test and no product code opens Chromium's DevTools on a TCP port.

Chromium's remote-debugging port is an unauthenticated listener on 127.0.0.1: any local
account can drive the browser while it runs (open pages, read local files, fetch through the
egress proxy, which admits the browser by its uid). The chrome hook and every browser hook use
`--remote-debugging-pipe`, and so do the tests (tests/browser/pipe_browser.py). This scans
every code file of the repository (not the docs, which may explain why the port is not used)
for the flag in any spelling (dashes, underscores or camelCase; and the address flag that goes
with it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Built from parts so that this file does not match itself.
FLAG = re.compile("remote[-_]?debugging[-_]?" + "(port|address)", re.IGNORECASE)
SKIP_DIRS = frozenset({"node_modules", "__pycache__"})  # and every folder named .*
PROSE = frozenset({".md", ".txt", ".rst"})


def uses_of_the_port(root: Path) -> list[str]:
    """`path:line: text` of every line of a code file under `root` naming the flag."""
    found = []
    for folder, dirs, files in os.walk(root):
        # .git, .venv, caches: not ours; installed packages are not the product's code
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_symlink() or path.suffix.lower() in PROSE:
                continue
            raw = path.read_bytes()
            if b"\0" in raw[:8192]:  # binary (a PNG fixture, a WACZ)
                continue
            for no, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
                if FLAG.search(line):
                    found.append(f"{path.relative_to(root)}:{no}: {line.strip()[:160]}")
    return found


def test_no_code_opens_a_devtools_port() -> None:
    found = uses_of_the_port(REPO)
    assert not found, (
        "DevTools on a TCP port is open to every local account; use --remote-debugging-pipe "
        "(tests: tests/browser/pipe_browser.PipeBrowser):\n" + "\n".join(found))


def test_the_scan_finds_the_flag_in_every_spelling(tmp_path: Path) -> None:
    flag = "--remote-debugging-" + "port"
    (tmp_path / "cdp.py").write_text(f'cmd = ["chromium", "{flag}=0"]\n')
    (tmp_path / "plugins" / "x").mkdir(parents=True)
    (tmp_path / "plugins" / "x" / "on_Snapshot__10_x").write_text(
        "#!/bin/sh\nchromium --REMOTE-DEBUGGING-" + "PORT=9222 &\n")
    (tmp_path / "lib.js").write_text("launch({remoteDebugging" + "Port: 9222})\n")
    (tmp_path / "a.py").write_text("args.append('--remote-debugging-" + "address=0.0.0.0')\n")
    (tmp_path / "why.md").write_text(f"single-file-cli passes `{flag}`\n")  # prose: allowed
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "dep.py").write_text(f"'{flag}'\n")  # not ours
    (tmp_path / "ok.py").write_text("cmd = ['chromium', '--remote-debugging-pipe']\n")
    assert [f.split(":")[0] for f in uses_of_the_port(tmp_path)] == [
        "a.py", "cdp.py", "lib.js", "plugins/x/on_Snapshot__10_x"]
