"""Crash-resume: `kill -9` archiveflow at random points of a depth-2 crawl, then resume.

A chain is one data folder: `archiveflow add --depth 2` of the local site, killed with
SIGKILL at a random point, then `archiveflow resume` (or `add` again if the crawl was never
created), killed again, … then one last `resume` runs to the end. Kill points are drawn from
the session seed (printed in the report header): either a random time after start (start-up,
seed parsing, snapshots, sealing) or right after the k-th hook run began. Chains run until at
least MIN_FAULTS kills have landed.

After each kill the test notes which ArchiveResults were final (or had their hook's exit
record on disk); after the last resume it checks: the crawl is sealed; each page has exactly
one Snapshot; each (snapshot, hook) exactly one final ArchiveResult; nothing is `started`;
no hook process of any killed run is alive; and every result noted as done was not run again
and its files are unchanged.

Fixture plugins (tests/reliability/plugins): crawlsvc (a crawl-wide on_Crawl service) and svc
(a snapshot's service), which run until stopped, so a killed orchestrator leaves them
running; ledger_bg (finite background), ledger (foreground); each appends its runs to a
ledger file outside the data folder. parse_html_urls (real)
finds the links.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.flows.test_pipeline import EXPECTED_PAGES
from tests.reliability.conftest import (
    FINAL,
    PLUGINS,
    SEED,
    hook_processes,
    kill9,
    query,
    run_cli,
    start_cli,
    wait_no_hooks,
)

MIN_FAULTS = int(os.environ.get("RELIABILITY_KILLS", "10"))
KILLS_PER_CHAIN = 5
PLUGIN_SET = ["svc", "parse_html_urls", "ledger_bg", "ledger"]
LEDGERED = ("svc", "ledger_bg", "ledger")


@dataclass
class Tally:
    """What the chains did, for the assertions and docs/reliability.md."""

    faults: int = 0
    runs: int = 0
    chains: int = 0
    lost: int = 0
    duplicates: int = 0
    orphans: int = 0
    redone: int = 0
    alive_after_kill: int = 0
    kept_checked: int = 0
    points: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _ledger(path: Path) -> Counter[tuple[str, str]]:
    """How many times each (snapshot id, plugin) started, from the ledger."""
    out: Counter[tuple[str, str]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "start":
                out[(parts[1], parts[2])] += 1
    return out


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    if folder.is_dir():
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.endswith((".pid", ".pid.tmp")):
                h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _done_at_kill(data: Path, ledger: Path) -> dict[str, dict[str, Any]]:
    """Results whose work was done when the process died: final in the index, or their
    hook's exit record on disk. Their files and run counts must not change afterwards."""
    if not (data / "index.duckdb").exists():
        return {}
    rows = query(data, """
        SELECT a.id, a.snapshot_id, a.plugin, a.hook_name, a.status, s.output_dir
        FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id""")
    runs = _ledger(ledger)
    done = {}
    for ar_id, sid, plugin, hook_name, status, out_dir in rows:
        folder = data / out_dir / plugin
        exit_file = folder / f"{hook_name}.exit.json"
        if status in FINAL or exit_file.exists():
            done[ar_id] = {"sid": sid, "plugin": plugin, "status": status if status in FINAL
                           else None, "exit_mtime": exit_file.stat().st_mtime_ns
                           if exit_file.exists() else None,
                           "digest": _folder_digest(folder), "runs": runs[(sid, plugin)],
                           "folder": folder}
    return done


def _crawl_exists(data: Path) -> bool:
    return (data / "index.duckdb").exists() and bool(query(data, "SELECT id FROM crawl"))


def _wait_trigger(proc: Any, rng: random.Random, ledger: Path) -> str | None:
    """Wait for this run's kill point; None if the run ended first."""
    if rng.random() < 0.4:
        delay = rng.uniform(0.5, 25.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            time.sleep(0.02)
        return f"t+{delay:.1f}s"
    k = rng.randint(1, 8)
    base = sum(_ledger(ledger).values())
    while sum(_ledger(ledger).values()) < base + k:
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    extra = rng.uniform(0.0, 0.6)
    time.sleep(extra)
    return f"hook start #{k}+{extra:.2f}s"


def _run_chain(root: Path, n: int, site_url: str, rng: random.Random, tally: Tally) -> None:
    data, ledger = root / f"chain{n}", root / f"ledger{n}.txt"
    env = {"RELIABILITY_LEDGER": str(ledger)}
    add = ["add", "--depth", "2", "--allow-private", "--plugins", ",".join(PLUGIN_SET),
           "--config", f"PLUGINS_PATH={PLUGINS}", "--concurrency", "3",
           f"{site_url}/index.html"]
    done: dict[str, dict[str, Any]] = {}
    killed_pids: set[tuple[int, float]] = set()
    kills = 0
    while kills < KILLS_PER_CHAIN and tally.faults < MIN_FAULTS:
        args = ["resume"] if _crawl_exists(data) else add
        proc = start_cli(data, *args, env=env)
        tally.runs += 1
        point = _wait_trigger(proc, rng, ledger)
        if point is None:  # the run finished before its kill point
            out, err = proc.communicate()
            assert proc.returncode == 0, err[-3000:]
            break
        kill9(proc)
        kills += 1
        tally.faults += 1
        tally.points.append(f"chain {n} {args[0]} killed at {point}")
        alive = hook_processes(data)
        tally.alive_after_kill += len(alive)
        for p in alive:
            try:
                killed_pids.add((p.pid, p.create_time()))
            except psutil.Error:
                continue
        for ar_id, info in _done_at_kill(data, ledger).items():
            done.setdefault(ar_id, info)  # the first sighting is the one to compare with
    final = run_cli(data, "add", *add[1:], env=env) if not _crawl_exists(data) else \
        run_cli(data, "resume", env=env)
    tally.runs += 1
    tally.chains += 1
    assert final.returncode == 0, final.stderr[-3000:]
    _check_chain(data, ledger, site_url, done, killed_pids, tally)


def _check_chain(data: Path, ledger: Path, site_url: str, done: dict[str, dict[str, Any]],
                 killed: set[tuple[int, float]], tally: Tally) -> None:
    crawls = query(data, "SELECT id, status FROM crawl")
    if len(crawls) != 1 or crawls[0][1] != "sealed":
        tally.problems.append(f"{data.name}: crawls {crawls}")
    snaps = query(data, "SELECT id, url, status FROM snapshot")
    urls = Counter(u[len(site_url):] for _, u, _ in snaps)
    tally.duplicates += sum(n - 1 for n in urls.values() if n > 1)
    if set(urls) != set(EXPECTED_PAGES):
        tally.problems.append(f"{data.name}: pages {sorted(urls)}")
    if any(st != "sealed" for _, _, st in snaps):
        tally.problems.append(f"{data.name}: snapshots not sealed {snaps}")
    results = query(data, "SELECT snapshot_id, plugin, status, error FROM archiveresult")
    per = Counter((sid, plugin) for sid, plugin, _, _ in results)
    tally.duplicates += sum(n - 1 for n in per.values() if n > 1)
    for sid, _, _ in snaps:
        for plugin in PLUGIN_SET:
            if per[(sid, plugin)] == 0:
                tally.lost += 1
                tally.problems.append(f"{data.name}: no result for {plugin} of {sid}")
    for sid, plugin, status, error in results:
        if status not in FINAL:
            tally.lost += 1
            tally.problems.append(f"{data.name}: {plugin} of {sid} is {status}")
        elif status != "succeeded":
            tally.problems.append(f"{data.name}: {plugin} of {sid} {status}: {error}")
    now = {(sid, plugin): status for sid, plugin, status, _ in results}
    runs = _ledger(ledger)
    for ar_id, info in done.items():
        tally.kept_checked += 1
        key = (info["sid"], info["plugin"])
        redo = []
        if info["status"] is not None and now.get(key) != info["status"]:
            redo.append(f"status {info['status']} -> {now.get(key)}")
        exit_file = info["folder"] / f"{_hook_stem(data, ar_id)}.exit.json"
        if info["exit_mtime"] is not None and (not exit_file.exists() or
                                               exit_file.stat().st_mtime_ns != info["exit_mtime"]):
            redo.append("exit record rewritten")
        if info["plugin"] in LEDGERED and runs[key] != info["runs"]:
            redo.append(f"ran {runs[key] - info['runs']} more time(s)")
        if _folder_digest(info["folder"]) != info["digest"]:
            redo.append("files changed")
        if redo:
            tally.redone += 1
            tally.problems.append(f"{data.name}: done {info['plugin']} of {info['sid']}: "
                                  + ", ".join(redo))
    left = wait_no_hooks(data, timeout=5.0)
    still = []
    for pid, ctime in killed:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ctime) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
                still.append(p)
        except psutil.Error:
            continue
    tally.orphans += len({p.pid for p in [*left, *still]})
    if left or still:
        tally.problems.append(f"{data.name}: processes left {left + still}")


def _hook_stem(data: Path, ar_id: str) -> str:
    return query(data, "SELECT hook_name FROM archiveresult WHERE id = ?", [ar_id])[0][0]


def test_kill_9_then_resume_loses_and_repeats_nothing(
        tmp_path: Path, site_url: str, prefect_api: str, rng: random.Random) -> None:
    tally = Tally()
    n = 0
    while tally.faults < MIN_FAULTS and n < 8:
        _run_chain(tmp_path, n, site_url, rng, tally)
        n += 1
    summary = (f"seed {SEED}: {tally.faults} kills in {tally.chains} chains, {tally.runs} runs; "
               f"lost {tally.lost}, duplicates {tally.duplicates}, orphans {tally.orphans}, "
               f"redone {tally.redone} of {tally.kept_checked} done results; "
               f"{tally.alive_after_kill} hook processes were alive right after the kills")
    print(summary)
    print("\n".join(tally.points))
    assert tally.faults >= MIN_FAULTS, summary
    assert not tally.problems, summary + "\n" + "\n".join(tally.problems)
    assert (tally.lost, tally.duplicates, tally.orphans, tally.redone) == (0, 0, 0, 0), summary
