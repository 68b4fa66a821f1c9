"""Hook discovery: find `on_<Event>__<NN>_<desc>[.bg].<ext>` files on the plugins search path,
and the command that starts each.

The search path is the project's `plugins/`, the user's `<data>/plugins/`, then every folder
listed in config `PLUGINS_PATH` (colon-separated). A plugin found in several folders is taken
from the last one, so the user's copy of a plugin replaces the project's.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# ArchiveBox (abx-plugins) event names read as ours.
EVENT_ALIASES: Final[dict[str, str]] = {"CrawlSetup": "Crawl", "BinaryRequest": "Binary"}
EXT_INTERPRETERS: Final[dict[str, str]] = {
    "py": sys.executable,
    "js": "node",
    "mjs": "node",
    "cjs": "node",
    "sh": "bash",
    "bash": "bash",
}
# Shebangs naming "whatever python is on PATH" run with our interpreter instead: that one may
# be a version-manager shim (pyenv's costs ~100 ms per start) or another Python altogether.
_ENV_PYTHONS: Final[frozenset[str]] = frozenset({"python", "python3"})
# Extensions we know how to run when the file is not executable.
RUNNABLE_EXTENSIONS: Final[frozenset[str]] = frozenset(EXT_INTERPRETERS)
FALSE_VALUES: Final[frozenset[str]] = frozenset({"false", "0", "no", "off"})

_HOOK_RE: Final = re.compile(r"^on_(?P<event>[A-Za-z][A-Za-z0-9]*)__(?P<nn>\d+)_(?P<desc>[^.]+)$")


class HookLaunchError(RuntimeError):
    """A hook file that cannot be started (unknown extension, missing interpreter)."""


@dataclass(frozen=True)
class Hook:
    """One hook executable, as discovered."""

    path: Path
    plugin: str
    event: str
    order: int
    name: str  # file stem without the extension, e.g. "on_Snapshot__50_wget.bg"
    is_background: bool
    is_daemon: bool  # `.daemon.bg.`: runs until killed; other background hooks are finite

    @property
    def plugin_dir(self) -> Path:
        """The plugin folder holding this hook."""
        return self.path.parent


def canonical_event(event: str) -> str:
    """The event name with ArchiveBox aliases mapped to ours (`CrawlSetup` → `Crawl`)."""
    return EVENT_ALIASES.get(event, event)


def env_key(plugin: str) -> str:
    """The config key prefix of a plugin: `parse-html` → `PARSE_HTML`."""
    return re.sub(r"[^A-Za-z0-9]", "_", plugin).upper()


def is_false(value: object) -> bool:
    """True for config values that mean "off": false/0/no/off, any case."""
    return str(value).strip().lower() in FALSE_VALUES


def parse_hook_name(path: Path) -> Hook | None:
    """A Hook for `path` if its file name follows the hook pattern, else None."""
    parts = path.name.split(".")
    if len(parts) < 2:
        return None
    m = _HOOK_RE.match(parts[0])
    if m is None:
        return None
    flags = set(parts[1:-1])
    ext = parts[-1]
    if ext not in RUNNABLE_EXTENSIONS and not os.access(path, os.X_OK):
        return None  # e.g. a README or a .pyc next to the hooks
    is_background = "bg" in flags
    return Hook(
        path=path,
        plugin=path.parent.name,
        event=canonical_event(m.group("event")),
        order=int(m.group("nn")),
        name=path.name[: -(len(ext) + 1)],
        is_background=is_background,
        is_daemon=is_background and "daemon" in flags,
    )


def plugin_search_path(
    project_plugins: Path | None, data_dir: Path | None, config: Mapping[str, str]
) -> list[Path]:
    """The plugins folders to search, in order: project, `<data>/plugins`, `PLUGINS_PATH`."""
    folders: list[Path] = []
    if project_plugins is not None:
        folders.append(project_plugins)
    if data_dir is not None:
        folders.append(data_dir / "plugins")
    folders.extend(_extra_folders(config))
    return _dedupe(folders)


def plugin_dirs(search_path: Iterable[Path]) -> dict[str, Path]:
    """Plugin name → plugin folder over the search path (later folders win)."""
    found: dict[str, Path] = {}
    for folder in search_path:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name.startswith(("_", ".")) or not entry.is_dir():
                continue
            found[entry.name] = Path(entry.path)
    return found


def is_plugin_enabled(plugin: str, config: Mapping[str, str]) -> bool:
    """False when config says `<PLUGIN>_ENABLED` is false/0/no/off."""
    value = config.get(f"{env_key(plugin)}_ENABLED")
    return value is None or not is_false(value)


def discover_hooks(
    event: str,
    search_path: Sequence[Path],
    config: Mapping[str, str],
    plugins: Collection[str] | None = None,
) -> list[Hook]:
    """Every enabled hook of `event` on the search path, sorted by (NN, file name).

    `search_path` is extended with config `PLUGINS_PATH`; `plugins`, when given, is an
    allow-list of plugin names.
    """
    wanted = canonical_event(event)
    folders = _dedupe([*search_path, *_extra_folders(config)])
    hooks: list[Hook] = []
    for plugin, folder in plugin_dirs(folders).items():
        if plugins is not None and plugin not in plugins:
            continue
        if not is_plugin_enabled(plugin, config):
            continue
        for entry in os.scandir(folder):
            if not entry.name.startswith("on_") or not entry.is_file():
                continue
            hook = parse_hook_name(Path(entry.path))
            if hook is not None and hook.event == wanted:
                hooks.append(hook)
    hooks.sort(key=lambda h: (h.order, h.path.name))
    return hooks


def _extra_folders(config: Mapping[str, str]) -> list[Path]:
    raw = config.get("PLUGINS_PATH") or ""
    # Absolute: a hook runs in its own output folder, where a relative path means nothing.
    return [Path(p).expanduser().absolute() for p in raw.split(":") if p.strip()]


def _dedupe(folders: Iterable[Path]) -> list[Path]:
    seen: set[str] = set()
    out: list[Path] = []
    for folder in folders:
        key = os.path.realpath(folder)
        if key not in seen:
            seen.add(key)
            out.append(folder)
    return out


def _is_env_python(word: str) -> bool:
    if word in _ENV_PYTHONS:
        return True
    return word.startswith("python3.") and word[len("python3.") :].isdigit()


def build_command(path: Path) -> list[str]:
    """The argv prefix that runs a hook file (its args are appended by the caller).

    Executable with a shebang: the shebang, except `#!/usr/bin/env python[3[.X]]`, which runs
    with `sys.executable`. Not executable: by extension (`.py` python, `.js` node, `.sh` bash).
    """
    if os.access(path, os.X_OK):
        with open(path, "rb") as f:
            head = f.read(256)
        if not head.startswith(b"#!"):
            return [str(path)]
        words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if len(words) >= 2 and os.path.basename(words[0]) == "env":
            rest = words[1:]
            if rest and rest[0] == "-S":
                rest = rest[1:]
            if rest and _is_env_python(rest[0]):
                return [sys.executable, *rest[1:], str(path)]
        return [str(path)]
    ext = path.name.rsplit(".", 1)[-1]
    interpreter = EXT_INTERPRETERS.get(ext)
    if interpreter is None:
        raise HookLaunchError(f"hook {path} is not executable and has unknown extension .{ext}")
    return [interpreter, str(path)]
