#!/usr/bin/env python3
"""Binary provider `abxpkg`: resolve or install one binary with ArchiveBox's abxpkg library.

For ArchiveBox-style declarations (a plugin's config.json `required_binaries`): abxpkg applies
`min_version`/`max_version`, `install_args`, `postinstall_scripts`, `min_release_age` and its
providers (env, apt, brew, pip, uv, npm, pnpm, puppeteer, chromewebstore, ...) as abx-dl does.
abxpkg needs Python >= 3.12 while archiveflow may run on 3.11: this hook (stdlib only) finds
`abxpkg` on PATH (the abx-plugins venv, `archiveflow plugins install abx`) and runs the library
with that venv's own interpreter.

Inputs (argv): --name=<binary> --bin-providers=<csv> --overrides=<json>
    [--binary-id --machine-id]; unknown options are ignored. `overrides.abxpkg` holds the
    declaration: {"name", "binproviders", "min_version", "max_version", "overrides", ...}.
Env: PATH, ABXPKG_LIB_DIR (where abxpkg installs: the data folder's lib), ABXPKG_ENABLED,
    ABXPKG_TIMEOUT.
Output: one `{"type":"Binary",...,"binprovider":"<abxpkg's provider>"}` line, exit 0; not
    listed or disabled: a line on stderr, exit 0; abxpkg absent or the binary unresolvable:
    abxpkg's reason on stderr (e.g. "version 20.20.2 does not satisfy min_version 24.22.1"),
    exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

PROVIDER = "abxpkg"
DEFAULT_TIMEOUT = 600.0

# Runs inside the abx venv (Python >= 3.12, abxpkg importable); argv[1] is the declaration.
RESOLVE = r"""
import json, sys
from abxpkg import Binary, PROVIDER_CLASS_BY_NAME
spec = json.loads(sys.argv[1])
names = [n.strip() for n in str(spec.get("binproviders") or "env").split(",") if n.strip()]
unknown = [n for n in names if n not in PROVIDER_CLASS_BY_NAME]
if unknown:
    print(f"abxpkg has no provider {', '.join(unknown)} (known: "
          f"{', '.join(sorted(PROVIDER_CLASS_BY_NAME))})", file=sys.stderr)
    sys.exit(1)
kw = {k: spec[k] for k in ("min_version", "max_version", "postinstall_scripts",
                          "min_release_age") if spec.get(k) is not None}
binary = Binary(name=spec["name"], binproviders=[PROVIDER_CLASS_BY_NAME[n]() for n in names],
                overrides=spec.get("overrides") or {}, **kw)
try:
    try:
        loaded = binary.load()
    except Exception:
        loaded = None
    if loaded is None or not loaded.is_valid:
        loaded = binary.install()
except Exception as e:
    # One short line per provider, the decisive part first (pnpm's "No matching version
    # found for abxbus@2.5.79", "version 20.20.2 does not satisfy min_version 24.22.1").
    errors = getattr(e, "errors", None)
    if isinstance(errors, dict) and errors:
        def short(text):
            lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
            for word in ("No matching version", "does not satisfy", "cause:", "Because",
                         "ERR_", "not found", "Unable", "disabled", "error", "Error"):
                key = [ln for ln in lines if word in ln]
                if key:
                    return " ".join(key[0].split())[:300]
            return " ".join((lines[0] if lines else "failed").split())[:300]
        text = "; ".join(f"{p}: {short(t)}" for p, t in errors.items())
    else:
        text = " ".join(str(e).split())[:1200] or type(e).__name__
    print(text, file=sys.stderr)
    sys.exit(1)
provider = loaded.loaded_binprovider
print(json.dumps({"type": "Binary", "name": spec["name"], "abspath": str(loaded.loaded_abspath),
                  "version": str(loaded.loaded_version or ""),
                  "sha256": loaded.loaded_sha256 or None,
                  "binprovider": provider.name if provider is not None else "abxpkg"}))
"""

_child: list[int] = []


def say(msg: str) -> None:
    print(f"{PROVIDER}: {msg}", file=sys.stderr, flush=True)


def _on_term(signum: int, _frame: Any) -> None:
    for pgid in _child:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(128 + signum)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    p.add_argument("--name", required=True)
    p.add_argument("--bin-providers", "--binproviders", dest="bin_providers", default="")
    p.add_argument("--overrides", default="{}")
    args, _unknown = p.parse_known_args(argv)
    return args


def abx_python() -> str | None:
    """The interpreter of the `abxpkg` on PATH (its console script's shebang)."""
    launcher = shutil.which("abxpkg")
    if launcher is None:
        return None
    try:
        with open(launcher, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
    python = first[2:].strip().split()[0] if first.startswith("#!") and first[2:].strip() \
        else ""
    return python if python and os.access(python, os.X_OK) else None


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    args = parse_args(argv)
    listed = [p.strip() for p in args.bin_providers.split(",") if p.strip()]
    if PROVIDER not in listed:
        say(f"not in --bin-providers={args.bin_providers!r}, skipping")
        return 0
    if (os.environ.get("ABXPKG_ENABLED") or "").strip().lower() in {"false", "0", "no", "off"}:
        say(f"ABXPKG_ENABLED={os.environ['ABXPKG_ENABLED']}, skipping")
        return 0
    try:
        overrides = json.loads(args.overrides or "{}")
    except ValueError as e:
        say(f"--overrides is not valid JSON: {e}")
        return 1
    spec = overrides.get(PROVIDER) if isinstance(overrides, dict) else None
    if not isinstance(spec, dict):
        spec = {"name": args.name, "binproviders": "env"}
    spec = {**spec, "name": spec.get("name") or args.name}
    python = abx_python()
    if python is None:
        say("abxpkg is not on PATH: run `archiveflow plugins install abx` (it installs "
            "abx-plugins and abxpkg into the data folder's lib)")
        return 1
    try:
        timeout = float(os.environ.get("ABXPKG_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        timeout = DEFAULT_TIMEOUT
    proc = subprocess.Popen([python, "-c", RESOLVE, json.dumps(spec)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    _child.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        say(f"abxpkg did not resolve {spec['name']} within {timeout:g}s")
        return 1
    if proc.returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        say(lines[-1] if lines else f"abxpkg exited {proc.returncode}")
        return 1
    record = out.strip().splitlines()[-1] if out.strip() else ""
    try:
        data = json.loads(record)
    except ValueError:
        say(f"abxpkg printed no result for {spec['name']}")
        return 1
    data["name"] = args.name  # the name the pipeline asked for (a placeholder filled)
    print(json.dumps(data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
