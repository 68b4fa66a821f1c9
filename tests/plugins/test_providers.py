"""Binary provider hooks (env, apt, pip, npm): real installs, each hook run as a subprocess.

Every hook runs by its shebang with a tmp LIB_DIR and cwd, as the pipeline would run it. The
npm and apt tests need npm / root with apt-get and say so when they skip. Network: PyPI, npm
and the Debian mirror.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from archiveflow.store.records import BinaryRecord, parse_lines

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
HOOKS: dict[str, Path] = {
    "env": PLUGINS / "env" / "on_Binary__10_install_using_env_provider.py",
    "apt": PLUGINS / "apt" / "on_Binary__20_install_using_apt_provider.py",
    "pip": PLUGINS / "pip" / "on_Binary__30_install_using_pip_provider.py",
    "npm": PLUGINS / "npm" / "on_Binary__40_install_using_npm_provider.py",
}
NO_SUCH = "archiveflow-no-such-binary-xyz"
SHARED_RE = re.compile(
    r"^# ---- shared by every provider hook.*?^# ---- end of shared part ----$", re.S | re.M
)
VERSION_RE = re.compile(r"\d+(?:\.\d+)+")


@dataclass
class HookRun:
    """One finished provider hook run."""

    rc: int
    stdout: str
    stderr: str
    secs: float
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def binary(self) -> dict[str, Any]:
        """The single Binary record the hook printed."""
        binaries = [r for r in self.records if r.get("type") == "Binary"]
        assert len(binaries) == 1, f"expected one Binary record: {self}"
        return binaries[0]


def run_hook(
    provider: str,
    name: str,
    lib: Path,
    *,
    bin_providers: str | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> HookRun:
    """Run a provider hook the way the pipeline does: argv, LIB_DIR, cwd = its output folder."""
    cwd = lib.parent / "out" / provider
    cwd.mkdir(parents=True, exist_ok=True)
    argv = [
        str(HOOKS[provider]),
        "--binary-id=b-1",
        "--machine-id=m-1",
        f"--name={name}",
        f"--bin-providers={bin_providers or provider}",
        f"--overrides={json.dumps(overrides or {})}",
        "--some-future-option=1",
    ]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "LIB_DIR": str(lib), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    records = []
    for line in proc.stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return HookRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, records)


def sha256_file(path: str) -> str:
    return hashlib.sha256(Path(path).resolve().read_bytes()).hexdigest()


def first_version(*cmd: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    m = VERSION_RE.search(out.stdout + out.stderr)
    assert m, f"no version in {cmd} output"
    return m.group(0)


def assert_binary(run: HookRun, provider: str, name: str) -> dict[str, Any]:
    assert run.rc == 0, run
    rec = run.binary
    assert rec["name"] == name
    assert rec["binprovider"] == provider
    assert os.path.isabs(rec["abspath"]) and os.path.isfile(rec["abspath"])
    assert rec["sha256"] == sha256_file(rec["abspath"])
    assert rec["version"] and VERSION_RE.fullmatch(rec["version"]), rec
    # The pipeline's own parser accepts it as it is.
    parsed, errors = parse_lines(run.stdout)
    assert not errors and [type(r) for r in parsed] == [BinaryRecord]
    return rec


# ---- conventions ----


@pytest.mark.parametrize("provider", sorted(HOOKS))
def test_hook_conventions(provider: str) -> None:
    hook = HOOKS[provider]
    text = hook.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env python3\n")
    assert os.access(hook, os.X_OK)
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names), f"non-stdlib: {imported}"

    config = json.loads((hook.parent / "config.json").read_text(encoding="utf-8"))
    key = provider.upper()
    assert config[f"{key}_ENABLED"]["type"] == "bool"
    assert config[f"{key}_ENABLED"]["default"] is True
    assert config[f"{key}_TIMEOUT"]["type"] == "int"
    assert all(spec["description"] for spec in config.values())


def test_shared_part_is_the_same_in_every_hook() -> None:
    parts = {p: SHARED_RE.search(h.read_text(encoding="utf-8")) for p, h in HOOKS.items()}
    assert all(parts.values()), "a hook lost its shared-part markers"
    assert len({m.group(0) for m in parts.values() if m}) == 1, "shared parts drifted apart"


@pytest.mark.parametrize("provider", sorted(HOOKS))
def test_unlisted_provider_exits_0_silently(provider: str, tmp_path: Path) -> None:
    run = run_hook(provider, "wget", tmp_path / "lib", bin_providers="brew,cargo")
    assert (run.rc, run.stdout) == (0, "")
    assert not (tmp_path / "lib").exists()


def test_disabled_provider_exits_0_silently(tmp_path: Path) -> None:
    run = run_hook("env", "wget", tmp_path / "lib", env={"ENV_ENABLED": "False"})
    assert (run.rc, run.stdout) == (0, "")
    assert "ENV_ENABLED=False" in run.stderr


@pytest.mark.parametrize("provider", sorted(HOOKS))
def test_unknown_binary_fails_or_passes_with_a_reason(provider: str, tmp_path: Path) -> None:
    run = run_hook(provider, NO_SUCH, tmp_path / "lib", bin_providers="env,apt,pip,npm")
    assert run.rc in (0, 1), run
    assert not [r for r in run.records if r.get("type") == "Binary"]
    assert run.stderr.strip().splitlines()[-1].startswith(f"{provider}: "), run
    if run.rc == 1:
        assert NO_SUCH in run.stderr
    else:  # installer absent here: a skip, said on stderr
        assert run.stdout == "" and "skipping" in run.stderr


# ---- env ----


def test_env_finds_wget_with_its_real_version(tmp_path: Path) -> None:
    wget = shutil.which("wget")
    if wget is None:
        pytest.skip("wget not on PATH")
    rec = assert_binary(run_hook("env", "wget", tmp_path / "lib"), "env", "wget")
    assert rec["abspath"] == os.path.abspath(wget)
    assert rec["version"] == first_version(wget, "--version")
    assert rec["sha256"] == sha256_file(wget)


# ---- pip ----


@pytest.fixture(scope="module")
def pip_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HookRun]:
    """cowsay (25 kB, pure Python, no deps) installed once into a fresh LIB_DIR."""
    lib = tmp_path_factory.mktemp("pip") / "lib"
    return lib, run_hook("pip", "cowsay", lib, bin_providers="env,pip")


def test_pip_installs_into_an_isolated_venv_under_lib(pip_install: tuple[Path, HookRun]) -> None:
    lib, run = pip_install
    rec = assert_binary(run, "pip", "cowsay")
    venv = lib / "pip" / "venv"
    assert rec["abspath"] == str(venv / "bin" / "cowsay")
    said = subprocess.run([rec["abspath"], "-t", "archived"], capture_output=True, text=True)
    assert said.returncode == 0 and "archived" in said.stdout
    assert rec["version"] == first_version(rec["abspath"], "--version")
    # Isolated: not archiveflow's environment, and none of its packages visible.
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import duckdb"], capture_output=True, text=True
    )
    assert probe.returncode != 0
    # Everything it wrote (venv, pip's cache, its lock) is under lib/pip; none in its cwd.
    assert {p.name for p in (lib / "pip").iterdir()} <= {"venv", "cache", ".install.lock"}
    assert not any((lib.parent / "out" / "pip").iterdir())
    print(f"pip first install: {run.secs:.1f}s")


def test_pip_second_run_does_not_reinstall(pip_install: tuple[Path, HookRun]) -> None:
    lib, first = pip_install
    script = lib / "pip" / "venv" / "bin" / "cowsay"
    mtime = script.stat().st_mtime_ns
    again = run_hook("pip", "cowsay", lib, bin_providers="env,pip")
    rec = assert_binary(again, "pip", "cowsay")
    assert rec == first.binary
    assert "already installed" in again.stderr
    assert script.stat().st_mtime_ns == mtime
    assert again.secs < 5, f"second run took {again.secs:.1f}s"
    print(f"pip second run: {again.secs:.2f}s")


def test_pip_timeout_is_a_failure_with_a_reason(tmp_path: Path) -> None:
    run = run_hook("pip", "cowsay", tmp_path / "lib", env={"PIP_TIMEOUT": "0.05"})
    assert run.rc == 1 and run.stdout == ""
    assert "timed out after" in run.stderr


# ---- npm ----


def test_npm_installs_semver_under_lib(tmp_path: Path) -> None:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm not on PATH")
    lib = tmp_path / "lib"
    run = run_hook("npm", "semver", lib, bin_providers="env,npm")
    rec = assert_binary(run, "npm", "semver")
    assert rec["abspath"] == str(lib / "npm" / "node_modules" / ".bin" / "semver")
    manifest = json.loads((lib / "npm" / "node_modules" / "semver" / "package.json").read_text())
    assert rec["version"] == manifest["version"]  # the semver CLI has no --version
    out = subprocess.run([rec["abspath"], "-r", ">=1", "1.2.3"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "1.2.3"
    written = {p.name for p in (lib / "npm").iterdir()}
    assert written <= {
        "node_modules",
        "package.json",
        "package-lock.json",
        "cache",
        ".install.lock",
    }
    assert not any((lib.parent / "out" / "npm").iterdir())
    print(f"npm first install: {run.secs:.1f}s")


# ---- apt ----


def test_apt_installs_hello(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not on PATH")
    if os.geteuid() != 0:
        pytest.skip("apt needs root")
    was_installed = (
        subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", "hello"], capture_output=True, text=True
        )
        .stdout.strip()
        .endswith("install ok installed")
    )
    try:
        run = run_hook("apt", "hello", tmp_path / "lib", bin_providers="apt,env")
        rec = assert_binary(run, "apt", "hello")
        assert rec["abspath"] == "/usr/bin/hello"
        # Debian's hello prints no version ("hello (GNU Hello) "): the package's is used.
        assert rec["version"] == first_version("dpkg-query", "-W", "-f=${Version}", "hello")
        again = run_hook("apt", "hello", tmp_path / "lib", bin_providers="apt,env")
        assert again.binary == rec and "already installed" in again.stderr
        print(f"apt install: {run.secs:.1f}s, second run: {again.secs:.2f}s")
    finally:
        if not was_installed:  # leave the system as we found it
            subprocess.run(["apt-get", "purge", "-y", "-q", "hello"], capture_output=True)
