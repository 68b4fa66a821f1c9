"""Every plugin folder follows the hook protocol (shared/HOOKS.md) and our plugin habits.

Parametrized over every `plugins/*/` folder, so a plugin added later is checked too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest
from archiveflow.store.records import BinaryRecord

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
HOOK_RE = re.compile(
    r"^on_(Crawl|CrawlSetup|Snapshot|CrawlEnd|Binary|BinaryRequest)__\d\d_\w+"
    r"(\.finite\.bg|\.daemon\.bg|\.bg)?\.\w+$"
)
# Events that do archiving work and so are switched and timed by <PLUGIN>_ENABLED/_TIMEOUT.
WORK_EVENTS = ("on_Crawl_", "on_CrawlSetup_", "on_Snapshot_", "on_CrawlEnd_")
PIPELINE_PACKAGES = {"archiveflow", "flows", "tasks", "store", "deployments", "plugins"}
CONFIG_TYPES = {"bool", "boolean", "int", "integer", "float", "number", "str", "string",
                "array", "list", "object", "dict", "enum", "path"}

PLUGINS = sorted(
    p for p in PLUGINS_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
)


def env_key(plugin: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", plugin).upper()


def hooks_of(plugin: Path) -> list[Path]:
    return sorted(p for p in plugin.iterdir() if p.is_file() and p.name.startswith("on_"))


def config_keys(plugin: Path) -> dict[str, dict]:
    """The declared keys of config.json, in our flat shape or ArchiveBox's JSON-schema one."""
    data = json.loads((plugin / "config.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict), "config.json must be a JSON object"
    props = data.get("properties", data)
    assert isinstance(props, dict)
    return {k: v for k, v in props.items() if k.isupper()}


def test_there_are_plugins() -> None:
    names = {p.name for p in PLUGINS}
    assert {"seeds", "headers", "wget", "title", "favicon", "htmltotext", "parse_html_urls",
            "screenshot"} <= names


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_hook_files(plugin: Path) -> None:
    hooks = hooks_of(plugin)
    # A folder with neither hooks nor config is not a plugin (config-only plugins may exist).
    assert hooks or (plugin / "config.json").exists(), f"{plugin.name}: no on_* hook"
    for hook in hooks:
        assert HOOK_RE.match(hook.name), f"{hook.name}: not on_<Event>__<NN>_<desc>[.bg].<ext>"
        assert os.access(hook, os.X_OK), f"{hook.name}: not executable"
        head = hook.read_bytes()[:300].decode("utf-8", "replace")
        assert head.startswith("#!"), f"{hook.name}: no shebang"
        lines = head.splitlines()
        # What it does, its inputs and outputs: a comment or docstring right at the top.
        assert len(lines) > 1 and lines[1].lstrip().startswith(("#", '"""', "//", "/*")), (
            f"{hook.name}: does not open with a comment saying what it does"
        )


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_python_hooks_are_standalone(plugin: Path) -> None:
    """Python hooks run by hand: they compile and import only the standard library."""
    for hook in hooks_of(plugin):
        if not hook.name.endswith(".py"):
            continue
        tree = ast.parse(hook.read_text(encoding="utf-8"), filename=str(hook))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top not in PIPELINE_PACKAGES, f"{hook.name} imports {mod}"
                assert top in sys.stdlib_module_names, f"{hook.name} imports non-stdlib {mod}"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_config_json(plugin: Path) -> None:
    does_work = any(h.name.startswith(WORK_EVENTS) for h in hooks_of(plugin))
    if not (plugin / "config.json").exists():
        # Binary provider plugins (env, pip, apt, ...) may do without one; HOOKS.md allows it.
        assert not does_work, f"{plugin.name}: config.json missing"
        return
    keys = config_keys(plugin)
    for key, spec in keys.items():
        assert isinstance(spec, dict), f"{key}: expected an object"
        assert str(spec.get("description", "")).strip(), f"{key}: no description"
        assert "default" in spec, f"{key}: no default"
        types = spec.get("type", "str")
        for t in types if isinstance(types, list) else [types]:
            assert t in CONFIG_TYPES | {"null"}, f"{key}: unknown type {t!r}"
    if does_work:
        prefix = env_key(plugin.name)
        assert f"{prefix}_ENABLED" in keys, f"{plugin.name}: {prefix}_ENABLED not declared"
        assert f"{prefix}_TIMEOUT" in keys, f"{plugin.name}: {prefix}_TIMEOUT not declared"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_binaries_jsonl(plugin: Path) -> None:
    path = plugin / "binaries.jsonl"
    if not path.exists():
        return  # needs no external binary
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        assert isinstance(obj, dict), f"line {n}: not an object"
        assert obj.get("type") == "Binary", f"line {n}: type must be Binary"
        rec = BinaryRecord.model_validate(obj)
        assert rec.bin_providers, f"line {n}: bin_providers missing"
        assert all(re.fullmatch(r"[a-z0-9_]+", p) for p in rec.bin_providers.split(",")), (
            f"line {n}: bin_providers must be a comma-separated list of provider names"
        )
