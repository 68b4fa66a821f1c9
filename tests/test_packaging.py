"""archiveflow installs as one import name, and a user's own `flows/` cannot shadow it.

The wheel is built from this checkout with pip (as `pip install .` does) and installed into
a folder of its own; nothing of the repository is on the path when it is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=out)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("archiveflow-*.whl")
    return built


def test_wheel_holds_only_the_archiveflow_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["archiveflow"]
        tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(
            ".dist-info")}
        assert tops == {"archiveflow"}
        for sub in ("flows/crawl.py", "tasks/hooks.py", "store/schema.sql", "cli/app.py",
                    "deployments/crawls.py", "plugins/wget/config.json"):
            assert f"archiveflow/{sub}" in names, sub


def test_every_plugin_folder_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(config["tool"]["setuptools"]["packages"])
    folders = {p.name for p in (ROOT / "plugins").iterdir()
               if p.is_dir() and not p.name.startswith((".", "_"))}
    assert {f"archiveflow.plugins.{name}" for name in folders} <= packages


def test_a_users_own_flows_package_does_not_shadow_archiveflow(
        wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    # A Prefect project of the user's, in the folder archiveflow is started from: Prefect
    # runs each scheduled run with `python -m prefect.engine` there, cwd first on sys.path.
    project = tmp_path / "project"
    for name in ("flows", "tasks", "store", "deployments"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(
            f"raise ImportError('the user project {name} package was imported')\n")
    code = ("import archiveflow.flows.scheduled, archiveflow.store.db, archiveflow.tasks.hooks,"
            " archiveflow.deployments.crawls, archiveflow.cli\n"
            "import archiveflow.tasks.runtime as rt\n"
            "assert archiveflow.flows.scheduled.__file__.startswith(sys.argv[1])\n"
            "assert (rt.PROJECT_PLUGINS / 'wget' / 'config.json').is_file(), rt.PROJECT_PLUGINS\n"
            "from archiveflow.tasks.discover import build_command, discover_hooks\n"
            "found = discover_hooks('Snapshot', [rt.PROJECT_PLUGINS], {})\n"
            "hooks = {h.path.name: h for h in found}\n"
            "wget = hooks['on_Snapshot__20_wget.py']\n"
            "assert build_command(wget.path)[0] == sys.executable, build_command(wget.path)\n"
            "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(site)],
                          capture_output=True, text=True, timeout=120, cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok"]


def test_no_bare_top_level_names_are_importable(tmp_path: Path) -> None:
    # this interpreter's own install (editable in development, as `make setup` makes it)
    code = ("import importlib.util\n"
            "print([n for n in ('flows', 'tasks', 'store', 'deployments', 'plugins')"
            " if importlib.util.find_spec(n) is not None])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, check=True)
    assert proc.stdout.strip() == "[]"
