"""Binaries per machine: tasks/binaries, the install_binaries flow, its CLI and deployment.

Real installs (env finds wget; pip installs cowsay from PyPI into `<data>/lib`), a real
DuckDB file, provider hooks run as subprocesses, the flow run once under Prefect's test
harness. Fixture plugins (tests/fixtures/plugins_binaries) only declare binaries; they reach
the search path through the data folder's `PLUGINS_PATH`. npm/apt installs are covered by
tests/plugins/test_providers.py; here npm and pip only have to fail on a name no provider
has (apt is left out of that list: as root it would wait for the dpkg lock of any
concurrent apt run).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archiveflow.store.binaries import list_binaries
from archiveflow.store.machines import machine_config
from archiveflow.tasks import binaries
from archiveflow.tasks.runtime import Runtime, open_runtime
from tests.command import ARCHIVEFLOW

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PLUGINS = ROOT / "tests" / "fixtures" / "plugins_binaries"
NO_SUCH = "archiveflow-no-such-binary-xyz"
WGET, COWSAY, NOTHING, WGET_TOO = "needs_wget", "needs_cowsay", "needs_nothing_real", \
    "needs_wget_too"

# The harness start (10-15 s idle) took 67-122 s on a loaded 2-core box.
pytestmark = pytest.mark.timeout(420)


def make_data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"PLUGINS_PATH": str(FIXTURE_PLUGINS)}))
    return path


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    runtime = open_runtime(make_data_dir(tmp_path_factory.mktemp("data")))
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def first_install(rt: Runtime) -> binaries.InstallReport:
    t0 = time.monotonic()
    report = binaries.ensure_binaries(rt, [WGET, COWSAY])
    print(f"\nfirst install (wget via env, cowsay via pip): {time.monotonic() - t0:.2f}s")
    return report


@pytest.fixture(scope="session")
def prefect_harness(prefect_api: str) -> Iterator[None]:
    """The session's Prefect API (tests/conftest.py): one harness for the whole run."""
    yield


def row(rt: Runtime, name: str) -> dict[str, Any]:
    rows = list_binaries(rt.store.cursor(), rt.machine.id, [name])
    assert len(rows) == 1, rows
    return rows[0]


def binary_processes(rt: Runtime) -> int:
    got = rt.store.cursor().execute(
        "SELECT count(*) FROM process WHERE owner_type = 'binary'").fetchone()
    return int(got[0]) if got else 0


def hook_logs(rt: Runtime) -> dict[Path, int]:
    root = rt.data_dir / "machines"
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.log")}


def real_version(*cmd: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"\d+(?:\.\d+)+", out)
    assert m, out
    return m.group(0)


# --- declarations --------------------------------------------------------------------------

def test_declarations_merge_by_name_and_note_conflicts(rt: Runtime) -> None:
    decls = binaries.declared_binaries(rt, [WGET, WGET_TOO, NOTHING])
    by_name = {d["name"]: d for d in decls}
    assert sorted(by_name) == sorted(["wget", NO_SUCH])
    wget = by_name["wget"]
    assert (wget["plugin"], wget["bin_providers"]) == (WGET, "env")  # the first one wins
    assert wget["plugins"] == [WGET, WGET_TOO]
    assert len(wget["conflicts"]) == 1 and WGET_TOO in wget["conflicts"][0]
    # config.json's required_binaries count as declarations too
    assert by_name[NO_SUCH]["bin_providers"] == "brew,pip,npm,env"
    # a plugin switched off declares nothing
    cfg = {**rt.config(), "NEEDS_WGET_ENABLED": "False"}
    assert binaries.declared_binaries(rt, [WGET], cfg) == []


# --- install, no-op, env ---------------------------------------------------------------------

def test_env_finds_wget_with_its_real_version(rt: Runtime,
                                              first_install: binaries.InstallReport) -> None:
    wget = row(rt, "wget")
    assert wget["status"] == "succeeded", wget["error"]
    assert wget["binprovider"] == "env"
    assert wget["abspath"] == shutil.which("wget")
    assert wget["version"] == real_version("wget", "--version")
    assert wget["sha256"] == binaries.sha256_file(wget["abspath"])
    # its hook ran in the row's own folder, and only `env` was started for it
    out = rt.data_dir / wget["output_dir"]
    assert str(out).startswith(str(rt.data_dir / "machines" / rt.machine.id / "binaries" /
                                   "wget"))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["env"]
    assert (out / "env" / "on_Binary__10_install_using_env_provider.stdout.log").exists()


def test_pip_installs_cowsay_into_lib_and_it_runs(rt: Runtime,
                                                  first_install: binaries.InstallReport) -> None:
    cowsay = row(rt, "cowsay")
    assert cowsay["status"] == "succeeded", cowsay["error"]
    assert cowsay["binprovider"] == "pip"
    assert cowsay["abspath"] == str(rt.lib_dir / "pip" / "venv" / "bin" / "cowsay")
    assert cowsay["version"] and re.fullmatch(r"\d+(\.\d+)+", cowsay["version"])
    said = subprocess.run([cowsay["abspath"], "-t", "archived"], capture_output=True,
                          text=True, timeout=60)
    assert said.returncode == 0 and "archived" in said.stdout
    assert sorted(first_install.installed) == ["cowsay", "wget"]
    assert first_install.hooks_started == 2  # one provider each: env, pip


def test_hooks_receive_resolved_binaries(rt: Runtime,
                                         first_install: binaries.InstallReport) -> None:
    env = rt.hook_env(rt.config())
    # (WGET_BINARY is not checked in env: the wget plugin's config.json default "wget"
    # wins over the resolved path there; see Runtime.hook_env.)
    assert env["COWSAY_BINARY"] == str(rt.lib_dir / "pip" / "venv" / "bin" / "cowsay")
    assert env["PATH"].split(os.pathsep)[0] == str(rt.lib_dir / "bin")
    assert str(rt.lib_dir / "pip" / "venv" / "bin") in env["PATH"].split(os.pathsep)[:3]
    config = machine_config(rt.store.cursor(), rt.machine.id)
    assert config["WGET_BINARY"] == row(rt, "wget")["abspath"] == rt.binaries["wget"]
    assert config["COWSAY_BINARY"] == env["COWSAY_BINARY"]
    assert rt.missing_binaries(COWSAY, rt.config()) == []


def test_second_install_is_a_noop(rt: Runtime, first_install: binaries.InstallReport) -> None:
    procs, logs = binary_processes(rt), hook_logs(rt)
    timings = []
    for _ in range(5):
        t0 = time.perf_counter()
        report = binaries.ensure_binaries(rt, [WGET, COWSAY])
        timings.append((time.perf_counter() - t0) * 1000)
        assert report.hooks_started == 0
        assert sorted(report.present) == ["cowsay", "wget"]
    print(f"\nno-op install check: median {sorted(timings)[2]:.1f} ms, "
          f"max {max(timings):.1f} ms")
    assert binary_processes(rt) == procs  # no hook process was started
    assert hook_logs(rt) == logs  # and no hook log was touched
    assert sorted(timings)[2] < 250  # milliseconds (generous for a loaded CI box)


# --- failures --------------------------------------------------------------------------------

def test_unknown_binary_fails_with_every_providers_reason(rt: Runtime) -> None:
    report = binaries.ensure_binaries(rt, [NOTHING])
    assert report.failed == [NO_SUCH]
    failed = row(rt, NO_SUCH)
    assert failed["status"] == "failed" and failed["abspath"] is None
    lines = failed["error"].splitlines()
    assert [ln.split(":", 1)[0] for ln in lines] == ["brew", "pip", "npm", "env"]
    assert all(ln.split(":", 1)[1].strip() for ln in lines), lines
    reasons = dict(ln.split(": ", 1) for ln in lines)
    assert "not found on PATH" in reasons["env"]
    assert "no provider hook" in reasons["brew"]  # listed, but nothing serves it here
    # each provider that ran left its logs in the row's folder
    out = rt.data_dir / failed["output_dir"]
    assert sorted(p.name for p in out.iterdir()) == ["env", "npm", "pip"]
    # snapshots see it as missing, with the command that fixes it
    assert rt.missing_binaries(NOTHING, rt.config()) == [NO_SUCH]
    # a crawl's pre-check does not retry it: no process
    procs = binary_processes(rt)
    again = binaries.ensure_binaries(rt, [NOTHING], retry_failed=False)
    assert again.failed == [NO_SUCH] and again.hooks_started == 0
    assert binary_processes(rt) == procs


# --- vanished or changed binaries ------------------------------------------------------------

def test_changed_binary_is_detected_and_resolved_again(
        rt: Runtime, first_install: binaries.InstallReport) -> None:
    before = row(rt, "cowsay")
    with open(before["abspath"], "a", encoding="utf-8") as f:
        f.write("# changed after install\n")
    report = binaries.ensure_binaries(rt, [COWSAY])
    assert "changed since it was installed" in report.requeued["cowsay"]
    after = row(rt, "cowsay")
    assert after["status"] == "succeeded" and report.installed == ["cowsay"]
    assert after["sha256"] == binaries.sha256_file(after["abspath"]) != before["sha256"]


def test_deleted_binary_is_detected_and_reinstalled(
        rt: Runtime, first_install: binaries.InstallReport) -> None:
    venv = rt.lib_dir / "pip" / "venv"
    shutil.rmtree(venv)
    assert rt.missing_binaries(COWSAY, rt.config()) == ["cowsay"]
    report = binaries.ensure_binaries(rt, [WGET, COWSAY])
    assert "no longer exists" in report.requeued["cowsay"]
    assert report.installed == ["cowsay"] and report.present == ["wget"]
    assert report.hooks_started == 1
    cowsay = row(rt, "cowsay")
    assert cowsay["status"] == "succeeded", cowsay["error"]
    assert (venv / "bin" / "cowsay").exists()
    assert rt.binaries["cowsay"] == cowsay["abspath"]


def test_deleted_console_script_alone_is_reinstalled(
        rt: Runtime, first_install: binaries.InstallReport) -> None:
    script = rt.lib_dir / "pip" / "venv" / "bin" / "cowsay"
    script.unlink()
    binaries.ensure_binaries(rt, [COWSAY])
    assert row(rt, "cowsay")["status"] == "succeeded", row(rt, "cowsay")["error"]


# --- CLI -----------------------------------------------------------------------------------

def test_binaries_command_reads_through_the_writer(
        rt: Runtime, first_install: binaries.InstallReport) -> None:
    # This process holds the index, so the command reads through its query server.
    proc = subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(rt.data_dir), "binaries", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["wget"]["status"] == "succeeded"
    assert rows["wget"]["provider"] == "env" and rows["wget"]["path"] == shutil.which("wget")
    assert rows[NO_SUCH]["status"] == "failed" and "env:" in rows[NO_SUCH]["error"]


# --- Prefect -------------------------------------------------------------------------------

def test_install_flow_runs_as_the_crawls_subflow_only_when_needed(
        prefect_harness: None, tmp_path: Path) -> None:
    from prefect import flow, get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from archiveflow.flows import context
    from archiveflow.flows.binaries import require_binaries

    @flow(name="crawl-like", persist_result=False)
    async def crawl_like(plugins: list[str]) -> dict[str, Any] | None:
        return await require_binaries(plugins)  # what the crawl flow does first

    async def install_runs() -> tuple[list[Any], list[Any]]:
        async with get_client() as client:
            runs = [f for f in await client.read_flow_runs()
                    if f.name.startswith("install-binaries ")]
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[r.id for r in runs]))) if runs else []
            return runs, tasks

    rt2 = open_runtime(make_data_dir(tmp_path / "data"))
    context.install(rt2)
    try:
        # other tests of the session may have run install flows on the same Prefect API
        earlier = {r.id for r in asyncio.run(install_runs())[0]}
        summary = asyncio.run(crawl_like([WGET]))
        assert summary is not None
        assert [(r["name"], r["status"], r["action"]) for r in summary["rows"]] == \
            [("wget", "succeeded", "installed")]
        assert rt2.binaries["wget"] == shutil.which("wget")
        flow_runs, task_runs = asyncio.run(install_runs())
        task_runs = [t for t in task_runs if t.flow_run_id not in earlier]
        flow_runs = [r for r in flow_runs if r.id not in earlier]
        assert len(flow_runs) == 1
        assert flow_runs[0].name == f"install-binaries {rt2.machine.hostname}"
        assert flow_runs[0].parent_task_run_id is not None  # a subflow of the crawl
        assert flow_runs[0].state_type.value == "COMPLETED"
        assert sorted(t.name for t in task_runs) == ["finish-binaries", "plan-binaries",
                                                     "wget"]

        # Everything present: no subflow run, no hook, milliseconds.
        procs = binary_processes(rt2)
        t0 = time.perf_counter()
        assert asyncio.run(require_binaries([WGET])) is None
        ms = (time.perf_counter() - t0) * 1000
        print(f"\nrequire_binaries with everything installed: {ms:.1f} ms")
        assert asyncio.run(crawl_like([WGET])) is None
        assert len([r for r in asyncio.run(install_runs())[0] if r.id not in earlier]) == 1
        assert binary_processes(rt2) == procs
    finally:
        context.uninstall()
        rt2.close()


def test_deployment_per_machine() -> None:
    from datetime import timedelta

    from archiveflow.deployments.binaries import binaries_deployment
    from archiveflow.tasks.machine import this_machine

    machine = this_machine()
    dep = binaries_deployment("/srv/archive", interval=3600, plugins=["wget"])
    assert dep.name == f"install-binaries-{machine.id}"
    assert dep.parameters == {"data_dir": str(Path("/srv/archive").resolve()),
                              "plugins": ["wget"]}
    [sched] = dep.schedules
    assert sched.schedule.interval == timedelta(hours=1)
    assert f"machine:{machine.id}" in dep.tags
    daily = binaries_deployment("/srv/archive")
    assert daily.schedules[0].schedule.interval == timedelta(days=1)
    nightly = binaries_deployment("/srv/archive", cron="0 3 * * *")
    assert nightly.schedules[0].schedule.cron == "0 3 * * *"
    with pytest.raises(ValueError):
        binaries_deployment("/srv/archive", interval=60, cron="* * * * *")
