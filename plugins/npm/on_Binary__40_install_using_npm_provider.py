#!/usr/bin/env python3
"""Binary provider `npm`: install a package's bin with `npm install --prefix $LIB_DIR/npm`.

Inputs (argv): --name=<binary> --bin-providers=<csv> [--overrides=<json>]
    [--binary-id=<id> --machine-id=<id>]; unknown options are ignored.
    `overrides.npm.packages` lists the packages to install (default: the name), e.g.
    `{"npm":{"packages":["@postlight/parser"]}}`.
Env: LIB_DIR (else $DATA_DIR/lib), NPM_TIMEOUT (else TIMEOUT, else 300 s), NPM_ENABLED.
Output: one `{"type":"Binary",...,"binprovider":"npm"}` line on stdout, exit 0, with
    abspath `$LIB_DIR/npm/node_modules/.bin/<name>`; an already-installed binary is reported
    as is. Not listed in --bin-providers, disabled, or no npm/node on PATH: a line on stderr,
    nothing on stdout, exit 0. Install failure: the reason on stderr, exit 1.
Writes only under $LIB_DIR/npm/ (npm's cache too: $LIB_DIR/npm/cache, unless set).
Stdlib only, so it runs by hand:
    LIB_DIR=/tmp/lib ./on_Binary__40_install_using_npm_provider.py --name=semver --bin-providers=npm
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from typing import Any

PROVIDER = "npm"


# ---- shared by every provider hook (each plugin is a self-contained folder, so it is copied) ----
VERSION_ARGS = (("--version",), ("-version",), ("-V",), ("version",))
VERSION_TIMEOUT = 10.0
# First version-looking token: `1.21.3`, `v20.20.2`, `2.10`, `1.2.3-rc1`; not `x86_64`.
_VERSION_RE = re.compile(r"(?<![\w.])v?(\d+(?:\.\d+)+(?:[-+~][0-9A-Za-z][0-9A-Za-z.]*)?)")
_children: set[int] = set()


def say(msg: str) -> None:
    """One line for the pipeline's per-provider reason (stderr)."""
    print(f"{PROVIDER}: {msg}", file=sys.stderr, flush=True)


def _on_term(signum: int, _frame: Any) -> None:
    # Installers run in their own process group (so a timeout kills all of it); take them
    # down too when the runner stops us, so nothing is orphaned.
    for pgid in list(_children):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(128 + signum)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    p.add_argument("--name", required=True)
    p.add_argument("--bin-providers", default="")
    p.add_argument("--overrides", default="{}")
    p.add_argument("--binary-id", default="")
    p.add_argument("--machine-id", default="")
    args, _unknown = p.parse_known_args(argv)
    return args


def is_false(value: str | None) -> bool:
    return (value or "").strip().lower() in {"false", "0", "no", "off"}


def should_run(args: argparse.Namespace) -> bool:
    """False (after saying why) when this provider is not listed or is disabled."""
    listed = [p.strip() for p in args.bin_providers.split(",") if p.strip()]
    if PROVIDER not in listed:
        say(f"not in --bin-providers={args.bin_providers!r}, skipping")
        return False
    key = f"{PROVIDER.upper()}_ENABLED"
    if is_false(os.environ.get(key)):
        say(f"{key}={os.environ[key]}, skipping")
        return False
    return True


def packages_for(name: str, overrides_json: str) -> list[str]:
    """`overrides[PROVIDER].packages` (or ArchiveBox's `install_args`), else `[name]`."""
    try:
        overrides = json.loads(overrides_json or "{}")
    except ValueError as e:
        raise SystemExit(fail(f"--overrides is not valid JSON: {e}")) from None
    spec = overrides.get(PROVIDER) if isinstance(overrides, dict) else None
    if isinstance(spec, dict):
        spec = spec.get("packages") or spec.get("install_args")
    if isinstance(spec, str):
        spec = [spec]
    return [str(p) for p in spec] if spec else [name]


def timeout_s(default: float) -> float:
    for key in (f"{PROVIDER.upper()}_TIMEOUT", "TIMEOUT"):
        try:
            return float(os.environ[key])
        except (KeyError, ValueError):
            continue
    return default


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `cmd` in its own process group; return (exit code, stdout+stderr).

    Raises subprocess.TimeoutExpired after killing the whole group.
    """
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    _children.add(proc.pid)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        _children.discard(proc.pid)
    return proc.returncode, out or ""


def detect_version(path: str) -> str | None:
    """The first version-looking token printed by `<path> --version` (or -version, -V, version).

    An answer from a zero exit wins; a token from a failing run (usage text) is a fallback.
    """
    fallback = None
    for extra in VERSION_ARGS:
        try:
            rc, out = run([path, *extra], VERSION_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = _VERSION_RE.search(out)
        if m and rc == 0:
            return m.group(1).rstrip(".")
        if m and fallback is None:
            fallback = m.group(1).rstrip(".")
    return fallback


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(os.path.realpath(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def emit(name: str, path: str, version: str | None) -> int:
    """Print the one Binary record. `abspath` keeps symlinks (a venv's python or a multi-call
    binary needs its own name); `sha256` is of the file it resolves to."""
    record = {
        "type": "Binary",
        "name": name,
        "abspath": os.path.abspath(path),
        "version": version,
        "sha256": sha256_of(path),
        "binprovider": PROVIDER,
    }
    print(json.dumps(record), flush=True)
    return 0


def fail(reason: str) -> int:
    say(reason)
    return 1


# ---- end of shared part ----


DEFAULT_TIMEOUT = 300.0
# The manifest keeps every installed package saved, so a later install does not prune it.
_MANIFEST = {"name": "archiveflow-lib", "private": True, "description": "archiveflow npm binaries"}


def lib_dir() -> str | None:
    if os.environ.get("LIB_DIR"):
        return os.environ["LIB_DIR"]
    if os.environ.get("DATA_DIR"):
        return os.path.join(os.environ["DATA_DIR"], "lib")
    return None


def package_name(spec: str) -> str:
    """`@scope/pkg@^2` -> `@scope/pkg`, `pkg@1.2` -> `pkg`."""
    at = spec.find("@", 1)
    return spec[:at] if at > 0 else spec


def package_version(prefix: str, packages: list[str]) -> str | None:
    """The installed package's version, for binaries that print none."""
    path = os.path.join(prefix, "node_modules", package_name(packages[0]), "package.json")
    try:
        with open(path, encoding="utf-8") as f:
            version = json.load(f).get("version")
    except (OSError, ValueError):
        return None
    return str(version) if version else None


def install_error(out: str, packages: list[str]) -> str:
    """The reason npm gave, in one line."""
    m = re.search(r"404 Not Found - GET \S+/(\S+?)(?: - |\s|$)", out)
    if m or "E404" in out:
        name = m.group(1).replace("%2f", "/").replace("%2F", "/") if m else packages[0]
        return f"no package {name!r} in the npm registry (404)"
    errors = [ln.strip() for ln in out.splitlines() if re.match(r"\s*npm (ERR!|error)", ln)]
    lines = errors or [ln.strip() for ln in out.splitlines() if ln.strip()]
    return f"npm install {' '.join(packages)} failed: {lines[0] if lines else 'no output'}"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not should_run(args):
        return 0
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        say("npm or node not on PATH, skipping")
        return 0
    root = lib_dir()
    if root is None:
        return fail("LIB_DIR (or DATA_DIR) is not set")
    packages = packages_for(args.name, args.overrides)
    prefix = os.path.join(os.path.abspath(root), "npm")
    binary = os.path.join(prefix, "node_modules", ".bin", args.name)
    if is_executable(binary):
        say(f"{args.name!r} already installed at {binary}")
        return emit(args.name, binary, detect_version(binary) or package_version(prefix, packages))

    timeout = timeout_s(DEFAULT_TIMEOUT)
    os.makedirs(prefix, exist_ok=True)
    # One npm at a time per prefix: concurrent installs rewrite the same package.json.
    with open(os.path.join(prefix, ".install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_executable(binary):
            manifest = os.path.join(prefix, "package.json")
            if not os.path.exists(manifest):
                with open(manifest, "w", encoding="utf-8") as f:
                    json.dump(_MANIFEST, f, indent=2)
            cmd = [
                npm,
                "install",
                "--prefix",
                prefix,
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                *packages,
            ]
            say(f"installing {' '.join(packages)} into {prefix}")
            try:
                # npm's cache (and its logs) stay in the data folder too, unless the user
                # chose one.
                env = dict(os.environ)
                if not {"npm_config_cache", "NPM_CONFIG_CACHE"} & env.keys():
                    env["npm_config_cache"] = os.path.join(prefix, "cache")
                rc, out = run(cmd, timeout, env=env)
            except subprocess.TimeoutExpired:
                return fail(f"npm install {' '.join(packages)} timed out after {timeout:g}s")
            if rc != 0:
                return fail(install_error(out, packages))
    if not is_executable(binary):
        return fail(
            f"installed {' '.join(packages)} but it provides no {args.name!r} "
            f"in {os.path.dirname(binary)}"
        )
    return emit(args.name, binary, detect_version(binary) or package_version(prefix, packages))


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _on_term)
    sys.exit(main(sys.argv[1:]))
