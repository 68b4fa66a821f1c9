"""`--plugins` selects whole plugins: their on_Crawl hooks too, plus what they require
(config.json `required_plugins`); a crawl-wide service of an unselected plugin never starts."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.flows.conftest import run_cli

SERVICE = """#!/usr/bin/env python3
# A crawl-wide setup hook: leaves a marker in its output folder.
from pathlib import Path
Path("started.marker").write_text("yes")
"""
SNAPSHOT = """#!/usr/bin/env python3
import json
print(json.dumps({"type": "ArchiveResult", "status": "succeeded", "output_str": "ok"}))
"""


def _plugin(root: Path, name: str, files: dict[str, str], config: dict) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    for fname, text in files.items():
        (folder / fname).write_text(text)
        (folder / fname).chmod(0o755 | stat.S_IXUSR)


@pytest.fixture()
def plugins(tmp_path: Path) -> Path:
    root = tmp_path / "plugins"
    _plugin(root, "svc", {"on_Crawl__05_svc.py": SERVICE}, {})
    _plugin(root, "needy", {"on_Snapshot__60_needy.py": SNAPSHOT},
            {"required_plugins": ["svc"]})
    return root


def _service_ran(data: Path) -> bool:
    return any(data.glob("users/*/crawls/*/*/svc/started.marker"))


@pytest.mark.parametrize(("selected", "ran"), [("headers", False), ("needy", True)])
def test_on_crawl_hooks_follow_the_selection(tmp_path: Path, plugins: Path, site_url: str,
                                             prefect_api: str, selected: str, ran: bool
                                             ) -> None:
    data = tmp_path / "data"
    proc = run_cli(data, "add", "--allow-private", "--plugins", selected,
                   "--config", f"PLUGINS_PATH={plugins}", f"{site_url}/page1.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _service_ran(data) is ran
