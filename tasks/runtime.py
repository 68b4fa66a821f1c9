"""The context every piece of pipeline work runs in: data folder, index, machine, config.

Built once per process (`open_runtime`), shared by all threads: the Store gives each thread
its own cursor; the rest is read-only after start, except the caches guarded by a lock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from archiveflow.store import binaries as binary_store
from archiveflow.store import machines
from archiveflow.store.db import Store
from archiveflow.store.reader import AlreadyServing, QueryServer
from archiveflow.tasks.abx import AbxInstall
from archiveflow.tasks.config import (
    ConfigFileError,
    load_plugin_config,
    load_user_config,
    required_binaries,
    resolve_config,
)
from archiveflow.tasks.discover import (
    Hook,
    discover_hooks,
    env_key,
    plugin_dirs,
    plugin_search_path,
)
from archiveflow.tasks.egress import EgressProxy
from archiveflow.tasks.egress_policy import Policy
from archiveflow.tasks.machine import MachineInfo, this_machine

PROJECT_PLUGINS: Final[Path] = Path(__file__).resolve().parent.parent / "plugins"
INDEX_NAME: Final[str] = "index.duckdb"


# Ours, not the hooks': the local Prefect API's password and address (hooks never talk to
# Prefect; plugin code is untrusted output's first reader).
_PRIVATE_ENV: Final[frozenset[str]] = frozenset(
    {"PREFECT_API_AUTH_STRING", "PREFECT_API_KEY", "PREFECT_API_URL",
     "PREFECT_SERVER_API_AUTH_STRING"})


@dataclass
class Runtime:
    """Everything pipeline work needs, for one data folder on this machine."""

    data_dir: Path
    store: Store
    machine: MachineInfo
    user_config: dict[str, Any]
    base_env: dict[str, str]
    search_path: list[Path]
    binaries: dict[str, str] = field(default_factory=dict)  # name → abspath (resolved rows)
    failed_binaries: dict[str, str] = field(default_factory=dict)  # name → why (failed rows)
    query_server: QueryServer | None = None
    egress: EgressProxy = field(default_factory=EgressProxy)  # listens from its first use
    _config_cache: dict[str, dict[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @functools.cached_property
    def lib_dir(self) -> Path:
        """Where provider hooks install binaries (ARCHIVEFLOW_LIB_DIR: this machine's own,
        when the data folder is shared)."""
        from archiveflow.settings import settings

        return settings().lib_dir or self.data_dir / "lib"

    def lib_bin_dirs(self) -> list[Path]:
        """Folders with installed binaries, put first on every hook's PATH: ours, then the
        abx-plugins venv's (`abxpkg`, and the Python >= 3.12 abx hooks run with)."""
        lib = self.lib_dir
        return [lib / "bin", lib / "pip" / "venv" / "bin", lib / "npm" / "node_modules" / ".bin",
                AbxInstall(lib).bin_dir]

    def plugin_dirs(self, config: Mapping[str, str] | None = None) -> dict[str, Path]:
        """Plugin name → folder over the search path (and `config`'s PLUGINS_PATH)."""
        if config is None:
            return plugin_dirs(self.search_path)
        return plugin_dirs([*self.search_path, *plugin_search_path(None, None, config)])

    def config(self, crawl_config: Mapping[str, Any] | None = None,
               snapshot_config: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The layered config (plugin defaults < user < env < crawl < snapshot), cached."""
        key = json.dumps([crawl_config or {}, snapshot_config or {}], sort_keys=True,
                         default=str)
        with self._lock:
            hit = self._config_cache.get(key)
            if hit is None:
                # A crawl may add plugin folders (PLUGINS_PATH): their defaults count too.
                extra = [str((snapshot_config or {}).get("PLUGINS_PATH") or ""),
                         str((crawl_config or {}).get("PLUGINS_PATH") or "")]
                folders = [*self.search_path,
                           *(Path(p) for e in extra for p in e.split(os.pathsep) if p)]
                hit = resolve_config(plugin_dirs(folders).values(), self.user_config,
                                     self.base_env, crawl_config, snapshot_config)
                self._config_cache[key] = hit
            return hit

    def hooks(self, event: str, config: Mapping[str, str],
              plugins: list[str] | None = None) -> list[Hook]:
        """Enabled hooks of an event (optionally only some plugins).

        on_Crawl hooks of a plugin that cannot work (`blocked_plugins`) are left out: an abx
        set-up hook would otherwise try the failed install again itself and run into its
        timeout; that plugin's (and its dependents') ArchiveResults fail with the reason.
        """
        hooks = discover_hooks(event, self.search_path, config, plugins)
        if event == "Crawl" and self.failed_binaries:
            blocked = self.blocked_plugins(config)
            hooks = [h for h in hooks if h.plugin not in blocked]
        return hooks

    def blocked_plugins(self, config: Mapping[str, str]) -> dict[str, str]:
        """Plugin → why it cannot work on this machine: an ArchiveBox-declared binary of it,
        or of a plugin it requires (`required_plugins`, transitively), failed to resolve
        (e.g. abxpkg: "node 20.20.2 does not satisfy min_version 24.22.1")."""
        if not self.failed_binaries:
            return {}
        folders = self.plugin_dirs(config)
        own: dict[str, str] = {}
        requires: dict[str, list[str]] = {}
        for plugin, folder in folders.items():
            try:
                requires[plugin] = load_plugin_config(folder).required_plugins
                decls = required_binaries(folder, config)
            except ConfigFileError:
                continue
            for decl in decls:
                name = decl["name"]
                if "abx" in decl and name in self.failed_binaries and name not in self.binaries:
                    why = " ".join(self.failed_binaries[name].split())
                    own[plugin] = f"binary {name} could not be resolved: {why}"
                    break
        blocked: dict[str, str] = {}
        for plugin in folders:
            seen, todo = {plugin}, [plugin]
            while todo:
                name = todo.pop()
                if name in own:
                    blocked[plugin] = own[name] if name == plugin else \
                        f"needs plugin {name}, whose {own[name]}"
                    break
                for dep in requires.get(name, []):
                    if dep not in seen:
                        seen.add(dep)
                        todo.append(dep)
        return blocked

    def refresh_binaries(self) -> None:
        """Reload this machine's resolved binaries from the index."""
        self.set_binaries(binary_store.list_binaries(self.store.cursor(), self.machine.id))

    def set_binaries(self, rows: list[dict[str, Any]]) -> None:
        """Take this machine's Binary rows: resolved ones by abspath, failed ones' errors."""
        self.binaries = {r["name"]: r["abspath"] for r in rows
                         if r["status"] == "succeeded" and r["abspath"]}
        self.failed_binaries = {r["name"]: str(r.get("error") or "failed") for r in rows
                                if r["status"] == "failed"}

    def missing_binaries(self, plugin: str, config: Mapping[str, str]) -> list[str]:
        """Binaries a plugin declares that this machine has neither installed nor on PATH."""
        folder = self.plugin_dirs(config).get(plugin)  # the crawl's PLUGINS_PATH counts
        if folder is None:
            return []
        path = os.pathsep.join([*map(str, self.lib_bin_dirs()), self.base_env.get("PATH", "")])
        missing = []
        for decl in required_binaries(folder, config):
            name = decl["name"]
            have = self.binaries.get(name)
            # abxpkg may resolve a library (a module file) rather than an executable
            if have and (os.access(have, os.X_OK) or ("abx" in decl and os.path.isfile(have))):
                continue
            if "abx" in decl and name in self.failed_binaries:
                # abxpkg refused it (a version bound, a missing package): one on PATH is not
                # the one the plugin needs, and its hook would try the install again itself.
                missing.append(name)
                continue
            # A configured path counts if it exists; a bare name (a plugin default such as
            # WGET_BINARY=wget) only if it is on PATH.
            configured = config.get(f"{env_key(name)}_BINARY") or name
            if shutil.which(configured, path=path):
                continue
            missing.append(name)
        return missing

    def hook_env(self, config: Mapping[str, str], **dirs: Path) -> dict[str, str]:
        """Environment of a hook: ours, the config, folders, resolved binaries, PATH.

        A hook that works for a crawl (a `crawl_dir` or `snap_dir` is given) is also pointed
        at the egress proxy with its crawl's policy; provider hooks (binary installs) keep
        the owner's own network settings: their targets come from the owner, not from pages.
        """
        env = {k: v for k, v in self.base_env.items() if k not in _PRIVATE_ENV}
        env.update(config)
        if "crawl_dir" in dirs or "snap_dir" in dirs:
            env.update(proxy_env(self.egress.url(Policy.from_config(env))))
        env["DATA_DIR"] = str(self.data_dir)
        env["LIB_DIR"] = str(self.lib_dir)
        env.update(abx_base_env(self.data_dir, self.lib_dir, config, self.base_env))
        env["MACHINE_ID"] = self.machine.id
        for key, value in dirs.items():
            env[key.upper()] = str(value)
        for name, abspath in self.binaries.items():
            # The installed binary beats a plugin's bare-name default, not a path the user set.
            key = f"{env_key(name)}_BINARY"
            if "/" not in env.get(key, ""):
                env[key] = abspath
        env["PATH"] = os.pathsep.join(
            [*map(str, self.lib_bin_dirs()), self.base_env.get("PATH", "")])
        return env

    def close(self) -> None:
        """Stop serving queries and the egress proxy, and close the index."""
        if self.query_server is not None:
            self.query_server.close()
        self.egress.close()
        self.store.close()


# The keys of abx-plugins' base/config.json that name folders: empty there means "the host
# runtime decides" (abx-dl: ~/.config/abx/lib, a mkdtemp in /tmp, ~/.config/abx/personas);
# ours are inside the data folder. A value the user set wins.
def abx_base_env(data_dir: Path, lib_dir: Path, config: Mapping[str, str],
                 base_env: Mapping[str, str]) -> dict[str, str]:
    """abx's environment contract (its base/config.json keys) plus HOME and XDG folders
    inside the data folder, so no hook writes into the user's home."""
    env = {
        "ABXPKG_LIB_DIR": config.get("ABXPKG_LIB_DIR") or str(lib_dir),
        "TMP_DIR": config.get("TMP_DIR") or str(data_dir / "tmp"),
        "PERSONAS_DIR": config.get("PERSONAS_DIR") or str(data_dir / "personas"),
    }
    home = config.get("HOOK_HOME") or str(lib_dir / "home")
    for folder in (env["TMP_DIR"], home if home != "inherit" else None):
        if folder:
            with contextlib.suppress(OSError):  # a hook that needs it says so itself
                os.makedirs(folder, mode=0o700, exist_ok=True)
    if home == "inherit":
        return env
    real_home = Path(base_env.get("HOME") or Path.home())
    env["HOME"] = home
    for var, sub in XDG_DIRS.items():
        env[var] = str(Path(home) / sub)
    # The owner's tool settings (registry, index, proxy, identity) still apply: by path.
    for var, candidates in USER_CONFIG_FILES.items():
        if base_env.get(var):
            continue
        for rel in candidates:
            if (real_home / rel).is_file():
                env[var] = str(real_home / rel)
                break
    return env


XDG_DIRS: Final[dict[str, str]] = {
    "XDG_CONFIG_HOME": ".config", "XDG_CACHE_HOME": ".cache",
    "XDG_DATA_HOME": ".local/share", "XDG_STATE_HOME": ".local/state"}
USER_CONFIG_FILES: Final[dict[str, tuple[str, ...]]] = {
    "NPM_CONFIG_USERCONFIG": (".npmrc",),
    "PIP_CONFIG_FILE": (".config/pip/pip.conf", ".pip/pip.conf"),
    "GIT_CONFIG_GLOBAL": (".gitconfig", ".config/git/config"),
}


def proxy_env(url: str) -> dict[str, str]:
    """The variables that point urllib, requests, wget, curl, git, Node and most other clients
    at `url`.

    Both spellings: curl and urllib read the lower-case ones, other tools the upper-case.
    no_proxy is emptied, or a user's `localhost,127.0.0.1` would send exactly the
    addresses the policy is about around the proxy.
    """
    env = {}
    for name in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
        env[name] = env[name.upper()] = url
    env["no_proxy"] = env["NO_PROXY"] = ""
    env["NODE_USE_ENV_PROXY"] = "1"  # Node's own fetch/http read the variables only if asked
    return env


def _serve_search(store: Store, req: dict[str, Any]) -> Any:
    """The read socket's `search` operation (store/search imports polars: not at start-up)."""
    from archiveflow.store import search

    return search.serve_request(store, req)


def open_runtime(
    data_dir: Path,
    *,
    wait_for_lock: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Runtime:
    """Create the data folder if needed, open its index, register this machine."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"data folder {data_dir} is not writable")
    store = Store(data_dir / INDEX_NAME, wait_for_lock=wait_for_lock, on_wait=on_wait)
    machine = this_machine()
    machines.upsert_machine(store.cursor(), machine_id=machine.id, hostname=machine.hostname,
                            os=machine.os, arch=machine.arch)
    base_env = dict(env if env is not None else os.environ)
    user_config = load_user_config(data_dir)
    pre = resolve_config([], user_config, base_env)
    rt = Runtime(
        data_dir=data_dir, store=store, machine=machine, user_config=user_config,
        base_env=base_env, search_path=plugin_search_path(PROJECT_PLUGINS, data_dir, pre),
    )
    rt.refresh_binaries()
    if store.shared:  # every machine reads the shared index itself: no read socket
        return rt
    try:
        # lets `sql`/`status`/`search` read while we write
        rt.query_server = QueryServer(store, ops={"search": _serve_search})
    except AlreadyServing:
        rt.query_server = None  # this process already serves the index
    except BaseException:
        store.close()  # a squatter on the socket (SocketInUse): fail loudly, index released
        raise
    return rt
