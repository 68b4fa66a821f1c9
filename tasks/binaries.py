"""The Binary model: what the enabled plugins declare on this Machine, resolved by provider
hooks. Binary: queued → started → succeeded / failed (store/transitions.py).

Plain Python, no Prefect: flows/binaries.py wraps these functions in a flow and tasks.

- `declared_binaries` merges every enabled plugin's `binaries.jsonl` / `required_binaries`
  by name: the first declaration wins (plugins in search-path order), later different ones
  are noted as conflicts.
- `plan_binaries` makes sure each declared binary has a row (machine_binary) and decides,
  without starting any process, what needs installing: a `succeeded` row whose abspath still
  holds a file with the recorded sha256 is left alone; one whose file vanished or changed is
  requeued. The sha256 is only recomputed when the file's stat (inode, size, mtime, ctime)
  differs from the one saved in `verified.json` next to the row's hook outputs, so the check
  costs milliseconds even for a 200 MB browser.
- `run` claims a row (queued → started) and runs the provider hooks (event Binary)
  in the order of the row's `bin_providers`; the first that prints a Binary record with an
  existing abspath wins (→ succeeded). Otherwise the row fails with one line per provider:
  why it did not provide the binary (the tail of its stderr, its exit).
- `finish_binaries` refreshes `Runtime.binaries` (hooks get `<NAME>_BINARY`) and patches the
  Machine config with `<NAME>_BINARY` when it changed.
- `ensure_binaries` = plan + install each + finish, in this thread.

Hook outputs: `<data>/machines/{machine_id}/binaries/{name}/{binary_id}/{provider plugin}/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from archiveflow.store import binaries as binary_store
from archiveflow.store import machines as machine_store
from archiveflow.store.errors import IllegalTransition, RowNotFound, WriteConflict
from archiveflow.store.processes import add_processes
from archiveflow.store.records import BinaryRecord
from archiveflow.tasks.abx import AbxInstall
from archiveflow.tasks.config import hook_timeout, required_binaries
from archiveflow.tasks.discover import Hook, HookLaunchError, env_key, is_plugin_enabled
from archiveflow.tasks.hooks import HookRun, run_hook, update_from_output
from archiveflow.tasks.output import HookOutcome, stderr_tail
from archiveflow.tasks.recorder import process_row
from archiveflow.tasks.runtime import Runtime

# A claimed row is held this long; a worker that died releases it when the lease passes.
BINARY_LEASE: Final[float] = 3600.0
# Provider hooks enforce their own deadline (<PROVIDER>_TIMEOUT); ours is the backstop.
TIMEOUT_MARGIN: Final[float] = 30.0
VERIFIED_FILE: Final[str] = "verified.json"
ABXPKG_PROVIDER: Final[str] = "abxpkg"  # plugins/abxpkg: abxpkg from the abx-plugins venv
_PROVIDER_RE: Final = re.compile(r"install_using_(?P<provider>[A-Za-z0-9_-]+?)_provider$")

Action = Literal["present", "installed", "failed", "busy"]


# --- declarations ----------------------------------------------------------------------

def declared_binaries(rt: Runtime, plugins: Sequence[str] | None = None,
                      config: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every enabled plugin's binary declarations, merged by name (first wins).

    Each item: `name`, `bin_providers` (csv), `overrides` (dict), `plugin` (the declaring
    plugin that won), `plugins` (every plugin declaring it) and `conflicts` (one message per
    later declaration that asked for different providers or overrides).

    Plugins are looked up with `config`'s PLUGINS_PATH (a crawl's own plugin folders count).
    An ArchiveBox declaration (config.json `required_binaries`) goes to the `abxpkg` provider
    when abx-plugins' venv is installed (`archiveflow plugins install abx`): abxpkg applies
    its version bounds, install args and providers as abx-dl does, the whole declaration
    passed as `overrides.abxpkg`.
    """
    cfg = dict(config if config is not None else rt.config())
    # `{ABXPKG_LIB_DIR}` in abx install roots: the lib folder the hooks get (tasks/runtime.py).
    cfg.setdefault("ABXPKG_LIB_DIR", "")
    cfg["ABXPKG_LIB_DIR"] = cfg["ABXPKG_LIB_DIR"] or str(rt.lib_dir)
    use_abxpkg = AbxInstall(rt.lib_dir).installed() is not None
    merged: dict[str, dict[str, Any]] = {}
    for plugin, folder in rt.plugin_dirs(cfg).items():
        if plugins is not None and plugin not in plugins:
            continue
        if not is_plugin_enabled(plugin, cfg):
            continue
        for decl in required_binaries(folder, cfg):
            name = str(decl["name"])
            providers = _csv(decl.get("bin_providers") or decl.get("binproviders") or "env")
            overrides = decl.get("overrides") or {}
            if use_abxpkg and isinstance(decl.get("abx"), dict):
                providers, overrides = ABXPKG_PROVIDER, {ABXPKG_PROVIDER: decl["abx"]}
            have = merged.get(name)
            if have is None:
                merged[name] = {"name": name, "bin_providers": providers,
                                "overrides": overrides, "plugin": plugin, "plugins": [plugin],
                                "conflicts": []}
                continue
            if plugin not in have["plugins"]:
                have["plugins"].append(plugin)
            if (providers, overrides) != (have["bin_providers"], have["overrides"]):
                have["conflicts"].append(
                    f"{plugin} declares {name} with bin_providers={providers!r} "
                    f"overrides={json.dumps(overrides)}; kept {have['plugin']}'s "
                    f"bin_providers={have['bin_providers']!r} "
                    f"overrides={json.dumps(have['overrides'])}")
    return list(merged.values())


def _csv(value: str | Iterable[str]) -> str:
    items = value.split(",") if isinstance(value, str) else list(value)
    seen: list[str] = []
    for item in (str(i).strip() for i in items):
        if item and item not in seen:
            seen.append(item)
    return ",".join(seen)


# --- verification of an installed binary ------------------------------------------------

def sha256_file(path: str) -> str:
    """sha256 of the file `path` resolves to (as the provider hooks compute it)."""
    h = hashlib.sha256()
    with open(os.path.realpath(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _verified_path(rt: Runtime, row: Mapping[str, Any]) -> Path:
    return rt.data_dir / row["output_dir"] / VERIFIED_FILE


def _save_verified(rt: Runtime, row: Mapping[str, Any], fingerprint: list[int],
                   sha256: str) -> None:
    path = _verified_path(rt, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"abspath": row["abspath"], "fingerprint": fingerprint,
                               "sha256": sha256}), encoding="utf-8")
    os.replace(tmp, path)


def _is_library(row: Mapping[str, Any]) -> bool:
    """abxpkg also resolves Python/JS libraries a hook imports (abx's parse_rss_urls needs
    `feedparser`): their abspath is the package's module file, not an executable."""
    return ABXPKG_PROVIDER in _csv(str(row.get("bin_providers") or "")).split(",")


def check_installed(rt: Runtime, row: Mapping[str, Any]) -> str | None:
    """None when a succeeded row's binary is still there, unchanged; else why not."""
    abspath = row.get("abspath")
    if not abspath:
        return "no abspath recorded"
    fingerprint = _fingerprint(abspath)
    if fingerprint is None or not (os.access(abspath, os.X_OK) or _is_library(row)):
        return f"{abspath} no longer exists or is not executable"
    want = row.get("sha256")
    if not want:
        return None  # nothing to compare with: presence is all we know
    try:
        saved = json.loads(_verified_path(rt, row).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("abspath") == abspath and \
            saved.get("fingerprint") == fingerprint and saved.get("sha256") == want:
        return None
    try:
        have = sha256_file(abspath)
    except OSError as e:
        return f"{abspath} cannot be read: {e.strerror or e}"
    if have != want:
        return f"{abspath} changed since it was installed (sha256 {have[:12]}, was {want[:12]})"
    _save_verified(rt, row, fingerprint, have)
    return None


# --- plan ------------------------------------------------------------------------------

@dataclass
class BinaryPlan:
    """What the declared binaries need, decided without starting any process."""

    declared: dict[str, dict[str, Any]]
    todo: list[dict[str, Any]] = field(default_factory=list)  # rows to install (queued)
    present: list[dict[str, Any]] = field(default_factory=list)  # succeeded and intact
    failed: list[dict[str, Any]] = field(default_factory=list)  # failed, not retried now
    busy: list[dict[str, Any]] = field(default_factory=list)  # held by a live worker
    requeued: dict[str, str] = field(default_factory=dict)  # name → why
    started_at: float = field(default_factory=time.monotonic)

    @property
    def conflicts(self) -> list[str]:
        return [c for d in self.declared.values() for c in d["conflicts"]]


def plan_binaries(rt: Runtime, plugins: Sequence[str] | None = None, *, force: bool = False,
                  retry_failed: bool = True,
                  crawl_config: Mapping[str, Any] | None = None) -> BinaryPlan:
    """Give every declared binary a row and sort the rows into todo/present/failed/busy.

    Writes only when something must change: rows for new declarations, and requeues
    (forced, failed and retried, or vanished/changed since installed).
    """
    t0 = time.monotonic()
    declared = {d["name"]: d for d in declared_binaries(rt, plugins, rt.config(crawl_config))}
    plan = BinaryPlan(declared, started_at=t0)
    if not declared:
        return plan
    cur = rt.store.cursor()
    mid = rt.machine.id
    rows = {r["name"]: r for r in binary_store.list_binaries(cur, mid, list(declared))}
    new = [d for name, d in declared.items() if name not in rows]
    if new:
        binary_store.declare_binaries(cur, mid, new)
        rows = {r["name"]: r for r in binary_store.list_binaries(cur, mid, list(declared))}
    now = datetime.now(UTC)
    requeue: list[str] = []
    for name, row in rows.items():
        status = row["status"]
        if status == "started":
            lease = row.get("retry_at")
            if lease is not None and lease > now:
                plan.busy.append(row)
            else:
                plan.todo.append(row)  # its worker died: the claim takes it over
            continue
        if status == "queued":
            plan.todo.append(row)
            continue
        why: str | None
        if force:
            why = "forced"
        elif status == "failed":
            why = "retrying a failed install" if retry_failed else None
        else:
            why = check_installed(rt, row)
        if why is None:
            (plan.present if status == "succeeded" else plan.failed).append(row)
            continue
        plan.requeued[name] = why
        requeue.append(row["id"])
    if requeue:
        moved = {r["id"]: r for r in binary_store.requeue_binaries(cur, requeue)}
        for rid in requeue:
            if rid in moved:
                plan.todo.append(moved[rid])
    # The current declaration is what gets installed (the row keeps its first providers).
    for row in plan.todo:
        decl = declared[row["name"]]
        row["bin_providers"] = decl["bin_providers"]
        row["overrides"] = decl["overrides"]
    plan.todo.sort(key=lambda r: r["name"])
    return plan


# --- install ---------------------------------------------------------------------------

def provider_of(hook: Hook) -> str:
    """The provider a Binary hook serves: `..._install_using_<p>_provider`, else its plugin."""
    m = _PROVIDER_RE.search(hook.name.split(".", 1)[0])
    return m.group("provider") if m else hook.plugin


def provider_hooks(rt: Runtime, config: Mapping[str, str]) -> dict[str, Hook]:
    """Provider name → its enabled Binary hook (the lowest NN when several serve one)."""
    out: dict[str, Hook] = {}
    for hook in rt.hooks("Binary", config):
        out.setdefault(provider_of(hook), hook)
    return out


def _one_line(text: str, provider: str, limit: int = 400) -> str:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(f"{provider}: "):
            line = line[len(provider) + 2:]
        if line:
            lines.append(line)
    out = "; ".join(lines[-3:])
    return out if len(out) <= limit else "…" + out[-limit:]


def _exit_phrase(outcome: HookOutcome) -> str:
    rc = outcome.exit_code
    secs = ""
    if outcome.started_at and outcome.ended_at:
        secs = f" after {(outcome.ended_at - outcome.started_at).total_seconds():.1f}s"
    if rc is None:
        return f"exit unknown{secs}"
    return f"killed by signal {-rc}{secs}" if rc < 0 else f"exited {rc}{secs}"


def _found(outcome: HookOutcome, name: str) -> BinaryRecord | None:
    recs = [r for r in outcome.other_records
            if isinstance(r, BinaryRecord) and r.abspath and r.name == name]
    return recs[-1] if recs else None


def _reason(provider: str, run: HookRun, outcome: HookOutcome,
            rec: BinaryRecord | None) -> str:
    tail = _one_line(stderr_tail(run.paths.stderr_log), provider)
    if rec is not None and rec.abspath:
        return f"reported {rec.abspath}, which is not an executable file"
    if run.kill_reason or run.timed_out:
        return f"{run.kill_reason or 'timed out'}" + (f": {tail}" if tail else "")
    if outcome.exit_code == 0:
        return tail or "printed no Binary record"
    return f"{tail or 'no reason on stderr'} ({_exit_phrase(outcome)})"


def run(rt: Runtime, row: Mapping[str, Any],
                config: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Claim one Binary row and run its providers in order; first success wins.

    Returns the row as stored afterwards plus `action` (installed/failed/busy),
    `hooks_started`, `seconds` and `reasons` (provider → why it did not provide it).
    """
    t0 = time.monotonic()
    cfg = config if config is not None else rt.config()
    cur = rt.store.cursor()
    try:
        claimed = binary_store.claim_binary(cur, row["id"], lease=BINARY_LEASE)
    except (IllegalTransition, RowNotFound, WriteConflict) as e:
        return {**row, "action": "busy", "hooks_started": 0, "seconds": 0.0,
                "reasons": {}, "note": str(e)}
    name: str = claimed["name"]
    providers = [p for p in _csv(row.get("bin_providers") or claimed["bin_providers"])
                 .split(",") if p]
    overrides = row.get("overrides", claimed["overrides"])
    overrides_json = overrides if isinstance(overrides, str) else json.dumps(overrides or {})
    out_dir = rt.data_dir / claimed["output_dir"]
    out_dir.mkdir(parents=True, exist_ok=True)
    env = rt.hook_env(cfg, binary_dir=out_dir)
    hooks = provider_hooks(rt, cfg)
    # `--binproviders` too: abx-plugins' older provider hooks (on_BinaryRequest__00_env.py)
    # read that spelling; ours read `--bin-providers`; each ignores the other.
    args = {"binary_id": claimed["id"], "machine_id": rt.machine.id, "name": name,
            "bin_providers": ",".join(providers), "binproviders": ",".join(providers),
            "overrides": overrides_json}
    reasons: dict[str, str] = {}
    procs: list[dict[str, Any]] = []
    won: tuple[str, BinaryRecord] | None = None
    try:
        for provider in providers:
            hook = hooks.get(provider)
            if hook is None:
                key = f"{env_key(provider)}_ENABLED"
                reasons[provider] = (f"disabled ({key}={cfg[key]})"
                                     if not is_plugin_enabled(provider, cfg)
                                     else "no provider hook for it on the plugins path")
                continue
            try:
                run = run_hook(hook, args=args, output_dir=out_dir, env=env,
                               timeout=hook_timeout(hook, cfg) + TIMEOUT_MARGIN,
                               extra_context={"binary_id": claimed["id"],
                                              "machine_id": rt.machine.id})
            except (HookLaunchError, OSError) as e:
                reasons[provider] = f"hook {hook.name} could not start: {e}"
                continue
            outcome = update_from_output(run, output_dir=out_dir, snapshot_dir=out_dir)
            procs.append({**process_row("binary", claimed["id"], run, outcome),
                          "machine_id": rt.machine.id})
            rec = _found(outcome, name)
            if outcome.exit_code == 0 and rec is not None and rec.abspath and \
                    os.path.isfile(rec.abspath) and (os.access(rec.abspath, os.X_OK)
                                                     or provider == ABXPKG_PROVIDER):
                won = (provider, rec)
                break
            reasons[provider] = _reason(provider, run, outcome, rec)
    except BaseException as e:
        # Interrupted or broken: the row must not stay claimed for an hour.
        _record_procs(rt, procs)
        error = f"install interrupted: {type(e).__name__}: {e}"
        binary_store.fail_binary(cur, claimed["id"], error)
        raise
    _record_procs(rt, procs)
    if won is not None:
        provider, rec = won
        abspath = rec.abspath or ""
        sha = rec.sha256 or sha256_file(abspath)
        final = binary_store.succeed_binary(cur, claimed["id"], abspath=abspath,
                                            version=rec.version, sha256=sha,
                                            binprovider=rec.binprovider or provider)
        fingerprint = _fingerprint(abspath)
        if fingerprint is not None:
            _save_verified(rt, final, fingerprint, sha)
        action: Action = "installed"
    else:
        if not providers:
            reasons["-"] = "bin_providers is empty"
        error = "\n".join(f"{p}: {r}" for p, r in reasons.items())
        final = binary_store.fail_binary(cur, claimed["id"], error)
        action = "failed"
    return {**final, "action": action, "hooks_started": len(procs),
            "seconds": time.monotonic() - t0, "reasons": reasons}


def _record_procs(rt: Runtime, procs: list[dict[str, Any]]) -> None:
    if procs:
        with rt.store.transaction() as cur:
            add_processes(cur, procs)


# --- finish ----------------------------------------------------------------------------

@dataclass
class InstallReport:
    """What an install pass did, one row per declared binary."""

    rows: list[dict[str, Any]]  # as stored, plus `action`
    conflicts: list[str]
    requeued: dict[str, str]  # name → why it was installed again
    hooks_started: int
    seconds: float

    def names(self, action: Action) -> list[str]:
        return [r["name"] for r in self.rows if r["action"] == action]

    @property
    def installed(self) -> list[str]:
        return self.names("installed")

    @property
    def present(self) -> list[str]:
        return self.names("present")

    @property
    def failed(self) -> list[str]:
        return self.names("failed")

    @property
    def busy(self) -> list[str]:
        return self.names("busy")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (what the flow returns)."""
        keep = ("name", "status", "action", "binprovider", "version", "abspath", "sha256",
                "error", "bin_providers")
        return {"rows": [{k: r.get(k) for k in keep} for r in self.rows],
                "conflicts": self.conflicts, "requeued": self.requeued,
                "hooks_started": self.hooks_started, "seconds": round(self.seconds, 4)}


def finish_binaries(rt: Runtime, plan: BinaryPlan,
                    results: Sequence[Mapping[str, Any]]) -> InstallReport:
    """Refresh `rt.binaries`, patch the Machine config with `<NAME>_BINARY`, report.

    When the plan had nothing to install nothing changed, so the plan's rows are the
    report and the index is not read again.
    """
    action: dict[str, Action] = {r["name"]: "present" for r in plan.present}
    action.update({r["name"]: "failed" for r in plan.failed})
    action.update({r["name"]: "busy" for r in plan.busy})
    if not plan.todo and not results:
        stored = {r["name"]: r for r in [*plan.present, *plan.failed, *plan.busy]}
    else:
        every = binary_store.list_binaries(rt.store.cursor(), rt.machine.id)
        # What Runtime.refresh_binaries does, from the rows just read (one query less).
        rt.set_binaries(every)
        stored = {r["name"]: r for r in every if r["name"] in plan.declared}
    for res in results:
        action[res["name"]] = res["action"]
    rows = []
    for name in sorted(stored):
        row = dict(stored[name])
        row["action"] = action.get(name, "busy" if row["status"] == "started" else
                                   "failed" if row["status"] == "failed" else "present")
        rows.append(row)
    if plan.todo or results:
        _patch_machine(rt, rows)
    return InstallReport(
        rows=rows, conflicts=plan.conflicts, requeued=dict(plan.requeued),
        hooks_started=sum(int(r.get("hooks_started", 0)) for r in results),
        seconds=time.monotonic() - plan.started_at)


def _patch_machine(rt: Runtime, rows: Iterable[Mapping[str, Any]]) -> None:
    cur = rt.store.cursor()
    have = machine_store.machine_config(cur, rt.machine.id)
    patch: dict[str, Any] = {}
    for row in rows:
        key = f"{env_key(row['name'])}_BINARY"
        value = row["abspath"] if row["status"] == "succeeded" else None
        if row["status"] in ("succeeded", "failed") and have.get(key) != value and \
                (value is not None or key in have):
            patch[key] = value
    if patch:
        machine_store.patch_machine_config(cur, rt.machine.id, patch)


def ensure_binaries(rt: Runtime, plugins: Sequence[str] | None = None, *,
                    force: bool = False, retry_failed: bool = True) -> InstallReport:
    """Install what the enabled plugins declare and this machine lacks, in this thread.

    Already installed and unchanged binaries start no process: when everything is in
    place this costs a few file stats and index reads. `retry_failed=False` leaves failed
    rows alone (a crawl's pre-check; `archiveflow install` retries them).
    """
    plan = plan_binaries(rt, plugins, force=force, retry_failed=retry_failed)
    cfg = rt.config()
    results = [run(rt, row, cfg) for row in plan.todo]
    return finish_binaries(rt, plan, results)
