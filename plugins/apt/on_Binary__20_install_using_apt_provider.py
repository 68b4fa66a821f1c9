#!/usr/bin/env python3
"""Binary provider `apt`: install a Debian/Ubuntu package system-wide with `apt-get install`.

Inputs (argv): --name=<binary> --bin-providers=<csv> [--overrides=<json>]
    [--binary-id=<id> --machine-id=<id>]; unknown options are ignored.
    `overrides.apt.packages` lists the packages to install (default: the name), e.g.
    `{"apt":{"packages":["nodejs"]}}` for `node`.
Env: APT_TIMEOUT (else TIMEOUT, else 600 s), APT_ENABLED.
Output: one `{"type":"Binary",...,"binprovider":"apt"}` line on stdout, exit 0, with the
    binary's path as the package lists it (e.g. /usr/bin/hello); already-installed packages
    are reported as they are. Not listed in --bin-providers, disabled, no apt-get, or not
    root: a line on stderr, nothing on stdout, exit 0. Install failure: the reason on
    stderr, exit 1.
`apt-get update` runs only when the package lists are missing or a download 404s (stale
lists), not on every install. Stdlib only, so it runs by hand (as root):
    ./on_Binary__20_install_using_apt_provider.py --name=hello --bin-providers=apt
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

PROVIDER = "apt"


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


DEFAULT_TIMEOUT = 600.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BIN_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/games", "/usr/local/bin")


def dpkg_query(*args: str) -> str | None:
    try:
        rc, out = run(["dpkg-query", *args], 30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out if rc == 0 else None


def package_name(spec: str) -> str:
    """`nodejs=18.19.0+dfsg-6` -> `nodejs` (apt-get takes the pin, dpkg-query does not)."""
    return spec.split("=", 1)[0]


def is_installed(package: str) -> bool:
    status = dpkg_query("-W", "-f=${Status}", package_name(package))
    return status is not None and status.strip().endswith("install ok installed")


def find_binary(name: str, packages: list[str]) -> str | None:
    """`name` among the installed packages' files, else on the system PATH (alternatives)."""
    if not all(is_installed(p) for p in packages):
        return None
    for package in packages:
        for line in (dpkg_query("-L", package_name(package)) or "").splitlines():
            path = line.strip()
            if os.path.basename(path) == name and os.path.dirname(path) in _BIN_DIRS:
                if is_executable(path):
                    return path
    return shutil.which(name, path=SYSTEM_PATH)


def package_version(packages: list[str]) -> str | None:
    """The upstream part of the package version (`1:2.10-3` -> `2.10`), for silent binaries."""
    out = dpkg_query("-W", "-f=${Version}", package_name(packages[0]))
    if not out or not out.strip():
        return None
    version = out.strip().split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def lists_missing() -> bool:
    return not glob.glob("/var/lib/apt/lists/*_Packages*")


def apt_get(args: list[str], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt/dpkg run instead of failing on its lock.
    lock = ["-o", f"DPkg::Lock::Timeout={int(timeout)}"]
    return run(["apt-get", *lock, *args], timeout, env=env)


def install_error(out: str, packages: list[str]) -> str:
    """The reason apt-get gave, in one line."""
    m = re.search(r"Unable to locate package (\S+)", out) or re.search(
        r"Package '?(\S+?)'? has no installation candidate", out
    )
    if m:
        return f"no package {m.group(1)!r} in the apt sources"
    errors = [ln.strip() for ln in out.splitlines() if ln.startswith("E:")]
    lines = errors or [ln.strip() for ln in out.splitlines() if ln.strip()]
    return f"apt-get install {' '.join(packages)} failed: {lines[0] if lines else 'no output'}"


def install(packages: list[str], timeout: float) -> str | None:
    """apt-get install the packages; None on success, else the reason.

    `timeout` bounds the whole sequence (update, install, retry), not each step.
    """
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired("apt-get", timeout)
        return remaining

    cmd = [
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        *packages,
    ]
    updated = False
    if lists_missing():
        say("package lists are missing, running apt-get update")
        apt_get(["update", "-q"], left())
        updated = True
    rc, out = apt_get(cmd, left())
    if rc != 0 and not updated and re.search(r"Failed to fetch .*404", out):
        say("package lists are stale (404), running apt-get update and retrying")
        apt_get(["update", "-q"], left())
        rc, out = apt_get(cmd, left())
    return None if rc == 0 else install_error(out, packages)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not should_run(args):
        return 0
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        say("apt-get not on PATH, skipping")
        return 0
    if os.geteuid() != 0:
        say("not root, skipping")
        return 0
    packages = packages_for(args.name, args.overrides)
    binary = find_binary(args.name, packages)
    if binary:
        say(f"{args.name!r} already installed at {binary} (package {' '.join(packages)})")
        return emit(args.name, binary, detect_version(binary) or package_version(packages))

    timeout = timeout_s(DEFAULT_TIMEOUT)
    say(f"installing {' '.join(packages)}")
    try:
        reason = install(packages, timeout)
    except subprocess.TimeoutExpired:
        return fail(f"apt-get install {' '.join(packages)} timed out after {timeout:g}s")
    if reason:
        return fail(reason)
    binary = find_binary(args.name, packages)
    if binary is None:
        return fail(f"installed {' '.join(packages)} but it provides no {args.name!r} binary")
    return emit(args.name, binary, detect_version(binary) or package_version(packages))


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _on_term)
    sys.exit(main(sys.argv[1:]))
