"""Config layering: defaults < user config < env < crawl < snapshot; values as strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archiveflow.tasks.config import (
    ConfigFileError,
    hook_timeout,
    load_user_config,
    required_binaries,
    resolve_config,
)
from archiveflow.tasks.discover import Hook


def _plugin(tmp_path: Path, name: str, config: dict | None, binaries: str | None = None) -> Path:
    d = tmp_path / name
    d.mkdir()
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    if binaries is not None:
        (d / "binaries.jsonl").write_text(binaries)
    return d


FLAT = {
    "WGET_ENABLED": {"type": "bool", "default": True, "description": "Run wget"},
    "WGET_TIMEOUT": {"type": "int", "default": 60, "description": "Seconds"},
    "WGET_ARGS": {"type": "list", "default": ["--mirror"], "description": "Args"},
    "WGET_USER_AGENT": {"type": "str", "default": "wget-default", "description": "UA"},
}
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Git",
    "type": "object",
    "required_binaries": [{"name": "{GIT_BINARY}", "binproviders": "env,apt,brew"}],
    "properties": {
        "GIT_ENABLED": {"type": "boolean", "default": True, "x-aliases": ["SAVE_GIT"]},
        "GIT_BINARY": {"type": "string", "default": "git"},
        "GIT_TIMEOUT": {"type": "integer", "default": 120, "x-fallback": "TIMEOUT"},
    },
}


def test_layering_order(tmp_path: Path) -> None:
    dirs = [_plugin(tmp_path, "wget", FLAT), _plugin(tmp_path, "none", None)]
    user = {"WGET_TIMEOUT": 90, "WGET_USER_AGENT": "user-ua", "MY_KEY": "mine"}
    env = {"WGET_TIMEOUT": "100", "WGET_USER_AGENT": "env-ua", "PATH": "/bin", "HOME": "/root"}
    crawl = {"WGET_USER_AGENT": "crawl-ua", "WGET_ENABLED": "false"}
    snapshot = {"WGET_USER_AGENT": "snap-ua"}
    c = resolve_config(dirs, user, env, crawl, snapshot)
    assert c["WGET_TIMEOUT"] == "100"  # env over user over default
    assert c["WGET_USER_AGENT"] == "snap-ua"  # snapshot over crawl over env
    assert c["WGET_ENABLED"] == "False"  # bools normalised
    assert c["WGET_ARGS"] == '["--mirror"]'
    assert c["MY_KEY"] == "mine"
    assert c["TIMEOUT"] == "60"
    assert "PATH" not in c and "HOME" not in c  # env only overrides known keys
    assert all(isinstance(v, str) for v in c.values())
    assert resolve_config(dirs)["WGET_ENABLED"] == "True"


def test_jsonschema_shape_aliases_fallback(tmp_path: Path) -> None:
    git = _plugin(tmp_path, "git", SCHEMA)
    c = resolve_config([git])
    assert c["GIT_ENABLED"] == "True" and c["GIT_BINARY"] == "git" and c["GIT_TIMEOUT"] == "120"
    assert "$schema" not in c and "title" not in c
    c = resolve_config([git], {"SAVE_GIT": False, "TIMEOUT": 30})
    assert c["GIT_ENABLED"] == "False"
    assert c["GIT_TIMEOUT"] == "30"  # unset: falls back to TIMEOUT
    c = resolve_config([git], {"TIMEOUT": 30}, snapshot_config={"GIT_TIMEOUT": 5})
    assert c["GIT_TIMEOUT"] == "5"


def test_required_binaries_both_shapes(tmp_path: Path) -> None:
    git = _plugin(tmp_path, "git", SCHEMA)
    # the ArchiveBox declaration is kept whole, templates filled, for abxpkg
    assert required_binaries(git, {"GIT_BINARY": "/usr/bin/git"}) == [
        {"type": "Binary", "name": "git", "bin_providers": "env,apt,brew",
         "abx": {"name": "/usr/bin/git", "binproviders": "env,apt,brew"}}
    ]
    wget = _plugin(
        tmp_path,
        "wget",
        FLAT,
        '{"type":"Binary","name":"wget","bin_providers":"apt,env"}\nnot json\n',
    )
    assert required_binaries(wget, {}) == [
        {"type": "Binary", "name": "wget", "bin_providers": "apt,env"}
    ]


def test_user_config_file(tmp_path: Path) -> None:
    assert load_user_config(tmp_path) == {}
    (tmp_path / "config.json").write_text('{"TIMEOUT": 5}')
    assert load_user_config(tmp_path) == {"TIMEOUT": 5}
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ConfigFileError):
        load_user_config(tmp_path)


def test_hook_timeout(tmp_path: Path) -> None:
    hook = Hook(tmp_path / "x.py", "wget", "Snapshot", 50, "x", False, False)
    assert hook_timeout(hook, {"TIMEOUT": "30"}) == 30
    assert hook_timeout(hook, {"TIMEOUT": "30", "WGET_TIMEOUT": "7"}) == 7
    assert hook_timeout(hook, {}) == 60


def test_core_keys_layer_like_plugin_keys(tmp_path: Path) -> None:
    # archiveflow's own keys are taken from the environment although no plugin declares them
    env = {"URL_ALLOW_PRIVATE": "yes", "PLUGINS_PATH": "/srv/plugins", "UNDECLARED": "x"}
    c = resolve_config([], {}, env)
    assert c["URL_ALLOW_PRIVATE"] == "True" and c["PLUGINS_PATH"] == "/srv/plugins"
    assert c["URL_ALLOW_FILE"] == "False" and "UNDECLARED" not in c
    c = resolve_config([], {"URL_ALLOW_PRIVATE": False}, env, {"URL_ALLOW_PRIVATE": "off"})
    assert c["URL_ALLOW_PRIVATE"] == "False"  # --config beats the environment
