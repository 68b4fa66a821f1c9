"""ArchiveBox's published plugin suite (`abx-plugins`) in the data folder's lib.

abx-plugins 1.13 needs Python >= 3.12 (its hooks' shebang is
`#!/usr/bin/env -S abxpkg run --script --deps-from=./config.json:required_binaries python3`),
archiveflow runs on 3.11: so the suite gets its own venv, `<lib>/abx/venv`, made with a
Python >= 3.12 found on this machine (config `ABX_PYTHON`, else `python3.N` on PATH, else a
pyenv version). The venv holds the pinned `abx-plugins` and what it pins (`abxpkg`, `uv`);
its `bin/` goes on the hooks' PATH (tasks/runtime.py), so the shebang finds `abxpkg`, and
`abxpkg` resolves `python3` to the venv's 3.12.

Layout: `<lib>/abx/venv/`, `<lib>/abx/plugins` (a link to the package's `plugins/` folder,
the folder to put on PLUGINS_PATH), `<lib>/abx/installed.json` (what was installed, with
which Python: a second install of the same pin is a file read).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# The abx-plugins release archiveflow is tested against (tests/abx); abx-plugins itself pins
# abxpkg and abxbus exactly, so this one pin fixes the hooks and the binary library.
ABX_PLUGINS_VERSION: Final[str] = "1.13.572"
MIN_PYTHON: Final[tuple[int, int]] = (3, 12)
_CANDIDATES: Final[tuple[str, ...]] = ("python3.14", "python3.13", "python3.12", "python3")
_PIP_TIMEOUT: Final[float] = 900.0


class AbxSetupError(RuntimeError):
    """The abx plugin suite could not be installed; the message says why and what to do."""


@dataclass(frozen=True)
class AbxInstall:
    """Where the abx suite is (or would be) installed under a lib folder."""

    lib_dir: Path

    @property
    def root(self) -> Path:
        return self.lib_dir / "abx"

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def bin_dir(self) -> Path:
        """The venv's bin folder: `abxpkg`, `uv` and a Python >= 3.12 for the hooks."""
        return self.venv / "bin"

    @property
    def plugins_dir(self) -> Path:
        """The folder holding abx's plugin folders (a link into the venv)."""
        return self.root / "plugins"

    @property
    def marker(self) -> Path:
        return self.root / "installed.json"

    def installed(self) -> dict[str, str] | None:
        """What installed.json records, if the venv it names is still usable."""
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not (self.bin_dir / "abxpkg").exists() or \
                not self.plugins_dir.is_dir():
            return None
        return {str(k): str(v) for k, v in data.items()}


def python_version(python: str, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None when it does not run (e.g. a pyenv shim of
    a version that is installed but not selected)."""
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=False,
                             env=dict(env) if env is not None else None)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def find_python(config: Mapping[str, str], env: Mapping[str, str]) -> str:
    """A Python >= 3.12: config ABX_PYTHON, else python3.N on PATH, else pyenv's versions."""
    wanted = config.get("ABX_PYTHON") or ""
    if wanted:
        found = shutil.which(wanted, path=env.get("PATH")) or wanted
        version = python_version(found, env)
        if version is None or version < MIN_PYTHON:
            raise AbxSetupError(f"ABX_PYTHON={wanted} is not a working Python >= 3.12 "
                                f"(found {'.'.join(map(str, version)) if version else 'none'})")
        return found
    tried = []
    for name in _CANDIDATES:
        path = shutil.which(name, path=env.get("PATH"))
        if path is None:
            continue
        version = python_version(path, env)
        tried.append(f"{name}={'.'.join(map(str, version)) if version else 'not runnable'}")
        if version is not None and version >= MIN_PYTHON:
            return path
    # pyenv installs versions it does not put on PATH unless selected: ask it where they are.
    pyenv = shutil.which("pyenv", path=env.get("PATH"))
    if pyenv is not None:
        try:
            root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30,
                                  check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            root = ""
        versions = Path(root) / "versions" if root else None
        if versions is not None and versions.is_dir():
            for folder in sorted(versions.iterdir(), key=_version_key, reverse=True):
                python = folder / "bin" / "python3"
                version = python_version(str(python), env) if python.exists() else None
                if version is not None and version >= MIN_PYTHON:
                    return str(python)
    raise AbxSetupError("abx-plugins needs Python >= 3.12 and none was found "
                        f"({', '.join(tried) or 'no python3.N on PATH'}); install one, or "
                        "set ABX_PYTHON=/path/to/python3.12")


def _wheels_python(wheels: Path | None, version: str, config: Mapping[str, str]) -> str | None:
    """The Python `download` filled `wheels` for (its wheels may be built for that version
    only), unless ABX_PYTHON says otherwise or it no longer runs."""
    if wheels is None or config.get("ABX_PYTHON"):
        return None
    try:
        python = (wheels / f".abx-plugins-{version}").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    found = python_version(python) if python else None
    return python if found is not None and found >= MIN_PYTHON else None


def _version_key(folder: Path) -> tuple[int, ...]:
    parts = folder.name.split(".")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def _pip(python: Path, args: Sequence[str], env: Mapping[str, str]) -> None:
    cmd = [str(python), "-m", "pip", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT,
                              check=False, env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    except subprocess.TimeoutExpired as e:
        raise AbxSetupError(f"pip {' '.join(args[:1])} did not finish in {_PIP_TIMEOUT:g}s"
                            ) from e
    if proc.returncode != 0:
        tail = "; ".join(ln.strip() for ln in proc.stderr.splitlines()
                         if ln.strip() and not ln.startswith("WARNING"))[-600:]
        raise AbxSetupError(f"pip {args[0]} exited {proc.returncode}: {tail}")


def install(lib_dir: Path, config: Mapping[str, str], env: Mapping[str, str], *,
            version: str = ABX_PLUGINS_VERSION, wheels: Path | None = None,
            force: bool = False) -> tuple[AbxInstall, bool]:
    """Install abx-plugins==`version` (and the abxpkg it pins) into `<lib>/abx/venv`.

    Returns (the install, whether anything was done): an install of the same version with a
    usable venv is left alone unless `force`. `wheels`: install offline from that folder
    (filled by `download`), as the tests do.
    """
    target = AbxInstall(lib_dir)
    have = target.installed()
    if have is not None and have.get("abx_plugins") == version and not force:
        return target, False
    python = _wheels_python(wheels, version, config) or find_python(config, env)
    if target.venv.exists():
        shutil.rmtree(target.venv)
    target.root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, "-m", "venv", str(target.venv)], capture_output=True,
                          text=True, timeout=300, check=False, env=dict(env))
    if proc.returncode != 0:
        raise AbxSetupError(f"{python} -m venv failed: {proc.stderr.strip()[-400:]}")
    venv_python = target.bin_dir / "python"
    args = ["install", "-q", f"abx-plugins=={version}"]
    if wheels is not None:
        args += ["--no-index", "--find-links", str(wheels.absolute())]
    _pip(venv_python, args, env)
    site = subprocess.run(
        [str(venv_python), "-c",
         "import abx_plugins, os; print(os.path.dirname(abx_plugins.__file__))"],
        capture_output=True, text=True, timeout=60, check=False)
    package_dir = Path(site.stdout.strip())
    if site.returncode != 0 or not (package_dir / "plugins").is_dir():
        raise AbxSetupError(f"abx-plugins {version} installed without its plugins folder "
                            f"({site.stderr.strip()[-300:]})")
    link = target.plugins_dir
    if link.is_symlink() or link.exists():
        link.unlink()
    # Relative: the data folder stays movable (the venv is not, but it is rebuilt then).
    link.symlink_to(os.path.relpath(package_dir / "plugins", link.parent))
    versions = subprocess.run(
        [str(venv_python), "-c", "import importlib.metadata as m; "
         "print(m.version('abxpkg'), m.version('abx-plugins'))"],
        capture_output=True, text=True, timeout=60, check=False).stdout.split()
    marker = {"abx_plugins": version, "abxpkg": versions[0] if versions else "",
              "python": python, "python_version": ".".join(map(str, python_version(
                  str(venv_python)) or ()))}
    tmp = target.marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(marker), encoding="utf-8")
    tmp.replace(target.marker)
    return target, True


def download(dest: Path, config: Mapping[str, str], env: Mapping[str, str], *,
             version: str = ABX_PLUGINS_VERSION) -> bool:
    """Fill `dest` with the wheels of abx-plugins==`version` and its dependencies, for the
    Python >= 3.12 `install` will use; False when `dest` already holds them."""
    stamp = dest / f".abx-plugins-{version}"
    if stamp.exists():
        return False
    python = find_python(config, env)
    dest.mkdir(parents=True, exist_ok=True)
    _pip(Path(python), ["download", "-q", "-d", str(dest.absolute()),
                        f"abx-plugins=={version}"], env)
    stamp.write_text(python + "\n", encoding="utf-8")
    return True
