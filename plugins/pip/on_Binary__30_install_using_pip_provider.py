#!/usr/bin/env python3
"""Binary provider `pip`: install a Python package's console script into `$LIB_DIR/pip/venv`.

The venv is made with `python -m venv` from the interpreter running this hook and is isolated
from archiveflow's own environment. It is created without pip (15 s saved here): the host's
`python -m pip --python <venv python>` installs into it, or, when the host has no pip >= 22.3,
the venv's own pip from `ensurepip`.

Inputs (argv): --name=<binary> --bin-providers=<csv> [--overrides=<json>]
    [--binary-id=<id> --machine-id=<id>]; unknown options are ignored.
    `overrides.pip.packages` lists the requirements to install (default: the name), e.g.
    `{"pip":{"packages":["yt-dlp[default]"]}}`.
Env: LIB_DIR (else $DATA_DIR/lib), PIP_TIMEOUT (else TIMEOUT, else 300 s), PIP_ENABLED.
Output: one `{"type":"Binary",...,"binprovider":"pip"}` line on stdout, exit 0, with
    abspath `$LIB_DIR/pip/venv/bin/<name>`; an already-installed binary is reported as is.
    Not listed in --bin-providers, disabled, or no way to make a venv: a line on stderr,
    nothing on stdout, exit 0. Install failure: the reason on stderr, exit 1.
Writes only under $LIB_DIR/pip/ (pip's cache too: $LIB_DIR/pip/cache, unless set).
Stdlib only, so it runs by hand:
    LIB_DIR=/tmp/lib ./on_Binary__30_install_using_pip_provider.py --name=cowsay --bin-providers=pip
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

PROVIDER = "pip"


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
_REQ_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX")


def lib_dir() -> str | None:
    if os.environ.get("LIB_DIR"):
        return os.environ["LIB_DIR"]
    if os.environ.get("DATA_DIR"):
        return os.path.join(os.environ["DATA_DIR"], "lib")
    return None


def clean_env() -> dict[str, str]:
    # Nothing from the caller's Python setup may leak into the isolated venv.
    return {k: v for k, v in os.environ.items() if k not in _DROP_ENV}


def host_pip_usable() -> bool:
    """True when `sys.executable -m pip` exists and knows `--python` (pip >= 22.3)."""
    try:
        rc, out = run([sys.executable, "-m", "pip", "--version"], 30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"pip (\d+)\.(\d+)", out)
    return rc == 0 and m is not None and (int(m.group(1)), int(m.group(2))) >= (22, 3)


def ensure_venv(venv: str, timeout: float) -> list[str] | None:
    """Create the venv if needed; return the pip command that installs into it, or None."""
    vpy = os.path.join(venv, "bin", "python")
    if not is_executable(vpy):
        rc, out = run(
            [sys.executable, "-m", "venv", "--clear", "--without-pip", venv],
            timeout,
            env=clean_env(),
        )
        if rc != 0:
            say(f"python -m venv {venv} failed: {out.strip()[-300:]}")
            return None
    if host_pip_usable():
        return [sys.executable, "-m", "pip", "--python", vpy]
    if not is_executable(os.path.join(venv, "bin", "pip")):
        rc, out = run([vpy, "-m", "ensurepip", "--default-pip"], timeout, env=clean_env())
        if rc != 0:
            say(f"no pip: the host has no pip >= 22.3 and ensurepip failed: {out.strip()[-300:]}")
            return None
    return [vpy, "-m", "pip"]


def install_error(out: str, packages: list[str]) -> str:
    """The reason pip gave, in one line."""
    m = re.search(r"No matching distribution found for (\S+)", out)
    if m:
        return f"no matching distribution for {m.group(1)!r}"
    errors = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("ERROR:")]
    lines = errors or [ln.strip() for ln in out.splitlines() if ln.strip()]
    return f"pip install {' '.join(packages)} failed: {lines[-1] if lines else 'no output'}"


def dist_version(venv: str, packages: list[str]) -> str | None:
    """The installed distribution's version, for binaries that print none."""
    m = _REQ_NAME_RE.match(packages[0])
    if not m:
        return None
    code = f"import importlib.metadata as m; print(m.version({m.group(0)!r}))"
    try:
        rc, out = run([os.path.join(venv, "bin", "python"), "-c", code], VERSION_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.strip() if rc == 0 and out.strip() else None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not should_run(args):
        return 0
    root = lib_dir()
    if root is None:
        return fail("LIB_DIR (or DATA_DIR) is not set")
    try:
        import venv as _venv  # noqa: F401  (Debian can ship python3 without it)
    except ImportError:
        say(f"{sys.executable} has no venv module, skipping")
        return 0
    packages = packages_for(args.name, args.overrides)
    venv = os.path.join(os.path.abspath(root), "pip", "venv")
    binary = os.path.join(venv, "bin", args.name)
    if is_executable(binary):
        say(f"{args.name!r} already installed at {binary}")
        return emit(args.name, binary, detect_version(binary) or dist_version(venv, packages))

    timeout = timeout_s(DEFAULT_TIMEOUT)
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    # One pip at a time per venv: concurrent installs of different binaries would race.
    with open(os.path.join(os.path.dirname(venv), ".install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_executable(binary):
            try:
                started = time.monotonic()
                pip = ensure_venv(venv, timeout)
                if pip is None:
                    say("cannot make a venv with pip, skipping")
                    return 0
                cmd = [*pip, "install", "--no-input", "--disable-pip-version-check", *packages]
                say(f"installing {' '.join(packages)} into {venv}")
                # pip's cache stays in the data folder too, unless the user chose one.
                env = {"PIP_CACHE_DIR": os.path.join(os.path.dirname(venv), "cache"), **clean_env()}
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                rc, out = run(cmd, left, env=env)
                if rc == 0 and not is_executable(binary):
                    # Already installed, but its console script was deleted: pip calls the
                    # requirement satisfied and restores nothing unless forced.
                    say("package present without its script; reinstalling it")
                    left = timeout - (time.monotonic() - started)
                    if left <= 0:
                        raise subprocess.TimeoutExpired(cmd, timeout)
                    rc, out = run([*cmd, "--force-reinstall", "--no-deps"], left, env=env)
            except subprocess.TimeoutExpired:
                return fail(f"pip install {' '.join(packages)} timed out after {timeout:g}s")
            if rc != 0:
                return fail(install_error(out, packages))
    if not is_executable(binary):
        return fail(
            f"installed {' '.join(packages)} but it provides no {args.name!r} "
            f"in {os.path.dirname(binary)}"
        )
    return emit(args.name, binary, detect_version(binary) or dist_version(venv, packages))


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _on_term)
    sys.exit(main(sys.argv[1:]))
