"""The environment every hook gets (tasks/runtime.py Runtime.hook_env): abx-plugins' base
keys inside the data folder, HOME and XDG folders inside it, the user's tool settings by path,
and the abx venv's bin on PATH."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archiveflow.tasks.runtime import Runtime, open_runtime


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    (h / ".config" / "pip").mkdir(parents=True)
    (h / ".config" / "pip" / "pip.conf").write_text("[global]\n")
    (h / ".npmrc").write_text("registry=https://registry.example/\n")
    return h


@pytest.fixture
def rt(tmp_path: Path, home: Path) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path / "data", env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    yield runtime
    runtime.close()


def test_abx_base_keys_and_home_inside_the_data_folder(rt: Runtime, home: Path) -> None:
    env = rt.hook_env(rt.config())
    data = rt.data_dir
    assert env["ABXPKG_LIB_DIR"] == env["LIB_DIR"] == str(data / "lib")
    assert env["TMP_DIR"] == str(data / "tmp") and (data / "tmp").is_dir()
    assert env["PERSONAS_DIR"] == str(data / "personas")
    assert env["HOME"] == str(data / "lib" / "home") and (data / "lib" / "home").is_dir()
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        assert env[var].startswith(str(data / "lib" / "home") + "/")
    # the owner's registry/index settings still apply, read from the real home
    assert env["NPM_CONFIG_USERCONFIG"] == str(home / ".npmrc")
    assert env["PIP_CONFIG_FILE"] == str(home / ".config" / "pip" / "pip.conf")
    assert "GIT_CONFIG_GLOBAL" not in env  # no ~/.gitconfig: nothing to point at
    path = env["PATH"].split(":")
    assert str(data / "lib" / "abx" / "venv" / "bin") in path
    assert path.index(str(data / "lib" / "abx" / "venv" / "bin")) < path.index("/usr/bin")


def test_user_settings_win(rt: Runtime, home: Path, tmp_path: Path) -> None:
    cfg = {**rt.config(), "ABXPKG_LIB_DIR": str(tmp_path / "shared-lib"), "HOOK_HOME": "inherit"}
    env = rt.hook_env(cfg)
    assert env["ABXPKG_LIB_DIR"] == str(tmp_path / "shared-lib")
    assert env["HOME"] == str(home) and "XDG_CACHE_HOME" not in env
