"""Config layering for hooks: plugin defaults < user config < env vars < crawl < snapshot.

Each plugin's `config.json` declares its keys, in our flat shape
`{"KEY": {"type": "bool", "default": true, "description": "..."}}` or ArchiveBox's
JSON-schema shape `{"properties": {"KEY": {...}}, "required_binaries": [...]}` (whose
`x-aliases` and `x-fallback` are honoured). Hooks receive every value as a string; bools are
`True`/`False`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from archiveflow.settings import parse_bool
from archiveflow.tasks.discover import Hook, env_key

_BOOL_TYPES: Final[frozenset[str]] = frozenset({"bool", "boolean"})
_PLACEHOLDER_RE: Final = re.compile(r"\{([A-Z0-9_]+)\}")


class ConfigFileError(ValueError):
    """A config.json that is not valid JSON or not the expected shape."""


@dataclass(frozen=True)
class ConfigKey:
    """One declared config key of a plugin."""

    key: str
    type: str = "str"
    default: Any = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    fallback: str | None = None  # ArchiveBox `x-fallback`: use this key when unset


@dataclass
class PluginConfig:
    """What a plugin's config.json declares."""

    keys: dict[str, ConfigKey] = field(default_factory=dict)
    required_binaries: list[dict[str, Any]] = field(default_factory=list)
    # Plugins whose hooks this one needs (ArchiveBox's `required_plugins`: e.g. screenshot
    # needs the crawl's browser from `chrome`); `--plugins` brings them along.
    required_plugins: list[str] = field(default_factory=list)
    # ArchiveBox's `wait_for_background_cleanup`: the snapshot's background hooks started so
    # far are finished (cleanup) before this plugin's hooks run (htmltotext reads wget's HTML).
    wait_for_background_cleanup: bool = False


def _core(key: str, type_: str, default: Any, description: str) -> tuple[str, ConfigKey]:
    return key, ConfigKey(key, type=type_, default=default, description=description)


# Keys of archiveflow itself, not of one plugin: declared here so that they layer like any
# plugin's key (defaults < data/config.json < environment < --config). An undeclared key is
# not taken from the environment, so every key the pipeline reads must be listed here.
CORE_CONFIG: Final[dict[str, ConfigKey]] = dict([
    _core("TIMEOUT", "int", 60,
          "Seconds a hook may run when its plugin sets no <PLUGIN>_TIMEOUT."),
    _core("RETRIES", "int", 1,
          "Times a hook that failed for a passing reason (timeout, connection reset, DNS "
          "temporary failure, HTTP 429/5xx, or `retryable` in its output) is run again, "
          "when its plugin sets no <PLUGIN>_RETRIES."),
    _core("RETRY_DELAY", "float", 2,
          "Seconds before the first retry of a hook (doubling for each further one), when "
          "its plugin sets no <PLUGIN>_RETRY_DELAY."),
    _core("URL_ALLOW_PRIVATE", "bool", False,
          "Archive loopback and private-network targets (your own intranet); `add "
          "--allow-private` sets it for one crawl."),
    _core("URL_ALLOW_FILE", "bool", False, "Archive file:// URLs."),
    _core("EGRESS_ALLOW_ADDRESSES", "str", "",
          "Private addresses (IP or IP:port, comma-separated) that hooks may reach "
          "although private targets are refused: one intranet server, not the whole network."),
    _core("CRAWL_SCOPE", "str", "host",
          "Which discovered links a crawl follows (with --depth): page (none), prefix (under "
          "a seed's folder), host (a seed's host), domain (a seed's host and its subdomains, "
          "www. dropped), any. Default host: a site, not the web it links to."),
    _core("PLUGINS_PATH", "str", "",
          "More plugin folders (separated by ':'), searched after the built-in plugins and "
          "<data>/plugins; a plugin found in several folders is taken from the last."),
    _core("BROWSER_PLUGINS", "str", "",
          "Plugins that drive a browser and share the browser limit (comma-separated; "
          "empty: the built-in browser plugins)."),
    _core("BROWSER_CONCURRENCY", "int", 1, "Browser plugin hooks that may run at once."),
    _core("ABX_PYTHON", "str", "",
          "The Python >= 3.12 that `archiveflow plugins install abx` builds abx-plugins' venv "
          "with (empty: the newest python3.N on PATH, else a pyenv version)."),
    _core("HOOK_HOME", "str", "",
          "HOME (and XDG_CONFIG/CACHE/DATA/STATE_HOME) of every hook, so that tools write "
          "caches and profiles into the data folder, not the user's home (empty: "
          "<data>/lib/home; `inherit`: the user's own). npm's, pip's and git's user config "
          "files are still read from the real home."),
])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path}: not valid JSON: {e}") from e


def load_plugin_config(plugin_dir: Path) -> PluginConfig:
    """Parse `<plugin_dir>/config.json` (flat or JSON-schema shape); empty when absent."""
    path = plugin_dir / "config.json"
    data = _read_json(path)
    if data is None:
        return PluginConfig()
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a JSON object")
    out = PluginConfig()
    props = data.get("properties") if isinstance(data.get("properties"), dict) else None
    items = props if props is not None else data
    for key, spec in items.items():
        if not isinstance(spec, dict) or not key.isupper():
            continue  # `$schema`, `title`, `required_plugins`, ... in the schema shape
        out.keys[key] = ConfigKey(
            key=key,
            type=str(spec.get("type", "str")),
            default=spec.get("default"),
            description=str(spec.get("description", "")),
            aliases=tuple(spec.get("x-aliases") or ()),
            fallback=spec.get("x-fallback"),
        )
    req = data.get("required_plugins")
    if isinstance(req, list):
        out.required_plugins = [str(p) for p in req if isinstance(p, str) and p.strip()]
    out.wait_for_background_cleanup = data.get("wait_for_background_cleanup") is True
    bins = data.get("required_binaries")
    if isinstance(bins, list):
        out.required_binaries = [b for b in bins if isinstance(b, dict) and b.get("name")]
    return out


def load_user_config(data_dir: Path) -> dict[str, Any]:
    """The user's flat `<data>/config.json` (`{"KEY": value}`); empty when absent."""
    path = data_dir / "config.json"
    data = _read_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a JSON object of KEY: value")
    return data


def to_str(value: Any, type_: str = "str") -> str:
    """A config value as a hook sees it: bools `True`/`False`, lists/dicts as JSON."""
    if type_ in _BOOL_TYPES and isinstance(value, str):
        flag = parse_bool(value)
        if flag is not None:
            return "True" if flag else "False"
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def resolve_config(
    plugins_dirs: Iterable[Path],
    user_config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    crawl_config: Mapping[str, Any] | None = None,
    snapshot_config: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Layer the config a hook sees; later layers win: defaults, user, env, crawl, snapshot.

    The result holds every key a plugin declares plus every key the user, crawl or snapshot
    set. Environment variables override those keys only (the caller's environment reaches
    hooks anyway); an alias (`SAVE_GIT`) sets its key (`GIT_ENABLED`).
    """
    declared: dict[str, ConfigKey] = dict(CORE_CONFIG)
    for plugin_dir in plugins_dirs:
        declared.update(load_plugin_config(plugin_dir).keys)
    alias_of = {alias: ck.key for ck in declared.values() for alias in ck.aliases}

    explicit: dict[str, Any] = {}
    env_layer: Final = object()  # a marker: a None crawl/snapshot layer is no env layer
    for layer in (user_config, env_layer, crawl_config, snapshot_config):
        if layer is env_layer:  # only known keys (or aliases of them)
            known = set(declared) | set(explicit) | set(alias_of)
            for name in known:
                if env is not None and name in env:
                    explicit[alias_of.get(name, name)] = env[name]
            continue
        if not isinstance(layer, Mapping):
            continue
        for key_name, value in layer.items():
            explicit[alias_of.get(str(key_name), str(key_name))] = value

    resolved: dict[str, str] = {}
    for key, ck in declared.items():
        if key in explicit:
            continue
        if ck.fallback and ck.fallback in explicit:
            fb = declared.get(ck.fallback)
            resolved[key] = to_str(explicit[ck.fallback], fb.type if fb else ck.type)
        else:
            resolved[key] = to_str(ck.default, ck.type)
    for key, value in explicit.items():
        resolved[key] = to_str(value, declared[key].type if key in declared else "str")
    return resolved


def hook_timeout(hook: Hook, config: Mapping[str, str], default: float = 60.0) -> float:
    """Seconds a hook may run: `<PLUGIN>_TIMEOUT`, else `TIMEOUT`, else `default`."""
    for key in (f"{env_key(hook.plugin)}_TIMEOUT", "TIMEOUT"):
        raw = config.get(key)
        if raw:
            try:
                return float(raw)
            except ValueError:
                continue
    return default


def _plugin_number(hook: Hook, config: Mapping[str, str], suffix: str) -> float | None:
    """`<PLUGIN>_<suffix>`, else `<suffix>`: the first that parses as a number."""
    for key in (f"{env_key(hook.plugin)}_{suffix}", suffix):
        raw = config.get(key)
        if raw:
            try:
                return float(raw)
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a hook's passing failure is run again, and how long to wait first."""

    retries: int
    delay: float  # seconds before the first retry

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2, 3, …): doubling each time."""
        return self.delay * 2 ** max(0, attempt - 2)


def hook_retries(hook: Hook, config: Mapping[str, str]) -> RetryPolicy:
    """`<PLUGIN>_RETRIES` / `<PLUGIN>_RETRY_DELAY`, else `RETRIES` / `RETRY_DELAY` (core keys,
    defaults 1 and 2 s). Negative values count as 0."""
    retries = _plugin_number(hook, config, "RETRIES")
    delay = _plugin_number(hook, config, "RETRY_DELAY")
    return RetryPolicy(retries=max(0, int(1 if retries is None else retries)),
                       delay=max(0.0, 2.0 if delay is None else delay))


def required_binaries(plugin_dir: Path, config: Mapping[str, str]) -> list[dict[str, Any]]:
    """Binary declarations of a plugin: `binaries.jsonl` lines plus config.json's
    `required_binaries` (ArchiveBox), as `{"type": "Binary", "name", "bin_providers", ...}`.

    `{KEY}` placeholders in names are filled from config; a path keeps its base name.
    """
    out: list[dict[str, Any]] = []
    path = plugin_dir / "binaries.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("name"):
                out.append({**obj, "type": "Binary"})
    for spec in load_plugin_config(plugin_dir).required_binaries:
        filled = fill_placeholders(spec, config)
        name = str(filled["name"])
        rec: dict[str, Any] = {"type": "Binary", "name": os.path.basename(name) or name}
        providers = spec.get("bin_providers") or spec.get("binproviders")
        if providers:
            rec["bin_providers"] = providers
        if spec.get("overrides"):
            rec["overrides"] = spec["overrides"]
        # The whole ArchiveBox declaration, `{KEY}` templates filled (`{ABXPKG_LIB_DIR}` in
        # install roots): what abxpkg resolves, with its version bounds and install args.
        rec["abx"] = filled
        out.append(rec)
    return out


def fill_placeholders(value: Any, config: Mapping[str, str]) -> Any:
    """`{KEY}` in every string of a JSON value replaced by config[KEY] (unknown keys kept)."""
    if isinstance(value, str):
        return _PLACEHOLDER_RE.sub(lambda m: config.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [fill_placeholders(v, config) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, config) for k, v in value.items()}
    return value
