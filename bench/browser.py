"""What the browser plugins cost, and what one Chromium per crawl saves.

    nice -n 10 .venv/bin/python bench/browser.py [--n 200] [--repeat 1]

Crawls of the generated site (bench/site.py: N pages, depth 2 from its seeds, each page once)
through the installed `archiveflow add`, in one data folder (its Prefect server started once,
by an untimed warm-up crawl), timed from the command's start to its exit:

- off:        wget + parse_html_urls only (the browser plugins off), the baseline
- shared:     the same + screenshot, pdf, dom in the crawl's one Chromium (plugins/chrome)
- per hook:   the same with CHROME_ENABLED=false: every browser hook starts its own Chromium
- both again with BROWSER_CONCURRENCY=2 (default 1: one browser hook at a time), in a data
  folder of their own (see WIDE)
- screenshot: screenshot alone, shared vs its own Chromium per snapshot (the old design)
- `--part handover` (issue #18): the shared crawl with and without the process-local queue
  in front of the Prefect browser limit (flows/limits.py; `_ARCHIVEFLOW_LOCAL_SLOTS=0` is
  the baseline: every snapshot thread polls Prefect and sleeps its Retry-After), A/B
  interleaved (ABBA order per pair of rounds) in one data folder, `--repeat` rounds.

Prints pages/s per crawl, the slot's busy share (the union of the browser hook runs' own
start..end over the crawl's wall time), the 1-minute load average after it, and the ratios.
The machines are shared and noisy: compare ratios from one run, never absolute numbers from
different runs.
`--only NAME` (repeatable) runs only those configurations.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Final

import duckdb

BENCH: Final[Path] = Path(__file__).resolve().parent
CLI: Final[Path] = Path(sys.executable).parent / "archiveflow"
BASE: Final[str] = "wget,parse_html_urls"  # parse_html_urls: the depth-2 crawl needs links
BROWSER: Final[str] = "screenshot,pdf,dom"
CONFIGS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("off", BASE, ()),
    ("shared", f"{BASE},{BROWSER}", ()),
    ("per hook", f"{BASE},{BROWSER}", ("CHROME_ENABLED=false",)),
    ("screenshot shared", f"{BASE},screenshot", ()),
    ("screenshot own", f"{BASE},screenshot", ("CHROME_ENABLED=false",)),
)
# Run in a data folder of their own: the browser limit is a Prefect global concurrency limit,
# created with BROWSER_CONCURRENCY slots by the first crawl that needs it and then left as it
# is (it may have been resized in the UI), so these must be the first to create it.
WIDE: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("shared, 2 tabs", f"{BASE},{BROWSER}", ("BROWSER_CONCURRENCY=2",)),
    ("per hook, 2 at once", f"{BASE},{BROWSER}", ("CHROME_ENABLED=false",
                                                  "BROWSER_CONCURRENCY=2")),
)
# Issue #18: (name, environment) of the two sides of the hand-over A/B, both "shared".
HANDOVER: Final[tuple[tuple[str, dict[str, str]], ...]] = (
    ("prefect only", {"_ARCHIVEFLOW_LOCAL_SLOTS": "0"}),
    ("local hand-over", {}),
)


def load_site() -> ModuleType:
    """bench/site.py by path: the name `site` is the standard library's."""
    spec = importlib.util.spec_from_file_location("bench_site", BENCH / "site.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_site"] = mod
    spec.loader.exec_module(mod)
    return mod


def crawl(data: Path, seeds: list[str], plugins: str, config: tuple[str, ...],
          env: dict[str, str] | None = None
          ) -> tuple[float, int, dict[str, int], dict[str, float], float]:
    """(seconds, snapshots, results by status, mean seconds per browser hook run, seconds
    the browser slot was busy) of one crawl through the CLI."""
    args = [str(CLI), "--data-dir", str(data), "add", "--allow-private", "--depth", "2",
            "--plugins", plugins, "--tag", f"bench-{time.monotonic_ns()}"]
    for kv in config:
        args += ["--config", kv]
    started = time.perf_counter()
    proc = subprocess.run([*args, *seeds], capture_output=True, text=True,
                          env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "120", **(env or {})})
    secs = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"crawl failed ({plugins} {config}): {proc.stderr[-2000:]}")
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        crawl_id = con.execute("SELECT id FROM crawl ORDER BY created_at DESC LIMIT 1"
                               ).fetchone()[0]  # type: ignore[index]
        snaps = con.execute("SELECT count(*) FROM snapshot WHERE crawl_id = ?",
                            [crawl_id]).fetchone()[0]  # type: ignore[index]
        statuses = dict(con.execute(
            "SELECT a.status, count(*) FROM archiveresult a JOIN snapshot s "
            "ON s.id = a.snapshot_id WHERE s.crawl_id = ? GROUP BY ALL", [crawl_id]).fetchall())
        hook_secs = dict(con.execute(
            "SELECT a.plugin, avg(epoch(a.end_ts) - epoch(a.start_ts)) FROM archiveresult a "
            "JOIN snapshot s ON s.id = a.snapshot_id WHERE s.crawl_id = ? "
            "AND a.plugin IN ('screenshot', 'pdf', 'dom') GROUP BY ALL", [crawl_id]).fetchall())
        spans = con.execute(
            "SELECT epoch(a.start_ts), epoch(a.end_ts) FROM archiveresult a JOIN snapshot s "
            "ON s.id = a.snapshot_id WHERE s.crawl_id = ? AND a.plugin IN "
            "('screenshot', 'pdf', 'dom') AND a.start_ts IS NOT NULL AND a.end_ts IS NOT NULL "
            "ORDER BY 1", [crawl_id]).fetchall()
    finally:
        con.close()
    return secs, int(snaps), statuses, hook_secs, union_seconds(spans)


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) spans, sorted by start."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in spans:
        if cur_end is None or start > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="pages of the generated site")
    ap.add_argument("--repeat", type=int, default=1, help="crawls per configuration")
    ap.add_argument("--part", choices=["all", "default", "wide", "handover"], default="all",
                    help="default: the BROWSER_CONCURRENCY=1 crawls; wide: the =2 ones; "
                    "handover: issue #18's A/B (not part of all)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only this configuration (repeatable), e.g. --only off")
    ns = ap.parse_args()
    site_mod = load_site()
    site = site_mod.generate(ns.n)
    if ns.part == "handover":
        return handover(site_mod, site, ns.n, ns.repeat)
    rates: dict[str, float] = {}
    parts = [(CONFIGS, ()), (WIDE, ("BROWSER_CONCURRENCY=2",))]
    if ns.part != "all":
        parts = [parts[0] if ns.part == "default" else parts[1]]
    with site_mod.Server(site) as srv:
        seeds = site.seed_urls(srv.base)
        print(f"{ns.n} pages, {len(seeds)} seeds, depth 2, --concurrency 4 (CLI default)")
        print(f"load average at the start: {os.getloadavg()[0]:.2f}")
        print(f"{'configuration':<20} {'pages':>5} {'seconds':>8} {'pages/s':>8} {'load':>5}  "
              "results; mean s per browser hook run")
        for configs, first in parts:
            configs = tuple(c for c in configs if not ns.only or c[0] in ns.only)
            if not configs:
                continue
            with tempfile.TemporaryDirectory(prefix="bench-browser-") as d:
                data = Path(d) / "data"
                # Untimed: starts the Prefect server and creates the browser limit.
                crawl(data, seeds[:1], f"{BASE},screenshot", first)
                for name, plugins, config in configs:
                    rates[name] = run_config(data, seeds, name, plugins, config, ns.repeat)
    print()
    ratios = (("browser outputs on / off (shared browser)", "shared", "off"),
              ("one browser per crawl / one per hook", "shared", "per hook"),
              ("the same, BROWSER_CONCURRENCY=2", "shared, 2 tabs", "per hook, 2 at once"),
              ("shared: BROWSER_CONCURRENCY=2 / 1", "shared, 2 tabs", "shared"),
              ("per hook: BROWSER_CONCURRENCY=2 / 1", "per hook, 2 at once", "per hook"),
              ("screenshot alone, shared / own per snapshot", "screenshot shared",
               "screenshot own"))
    for label, a, b in ratios:
        if a in rates and b in rates:
            print(f"{label + ':':<46} {rates[a] / rates[b]:.2f}x the pages/s")


def handover(site_mod: ModuleType, site: object, n: int, rounds: int) -> None:
    """Issue #18: the shared crawl with and without the local queue in front of the Prefect
    browser limit, interleaved; per side the pages/s and busy share of each crawl."""
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in HANDOVER}
    with site_mod.Server(site) as srv, \
            tempfile.TemporaryDirectory(prefix="bench-browser-") as d:
        seeds = site.seed_urls(srv.base)  # type: ignore[attr-defined]
        data = Path(d) / "data"
        print(f"{n} pages, {len(seeds)} seeds, depth 2, --concurrency 4, plugins "
              f"{BASE},{BROWSER}, BROWSER_CONCURRENCY=1; {rounds} rounds, ABBA")
        print(f"load average at the start: {os.getloadavg()[0]:.2f}")
        crawl(data, seeds[:1], f"{BASE},screenshot", ())  # untimed: server, limit
        print(f"{'configuration':<16} {'pages':>5} {'seconds':>8} {'pages/s':>8} "
              f"{'busy':>5} {'load':>5}  mean s per browser hook run")
        for r in range(rounds):
            for name, env in (HANDOVER if r % 2 == 0 else HANDOVER[::-1]):
                secs, snaps, statuses, hook_secs, busy = crawl(
                    data, seeds, f"{BASE},{BROWSER}", (), env)
                got[name].append((snaps / secs, busy / secs))
                print(f"{name:<16} {snaps:>5} {secs:>8.1f} {snaps / secs:>8.3f} "
                      f"{busy / secs:>5.0%} {os.getloadavg()[0]:>5.2f}  "
                      + ", ".join(f"{k} {v:.2f}" for k, v in sorted(hook_secs.items()))
                      + f" ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})",
                      flush=True)
    (a, _), (b, _) = HANDOVER
    mean = {k: (sum(p for p, _ in v) / len(v), sum(u for _, u in v) / len(v))
            for k, v in got.items()}
    print()
    for name, (rate, busy) in mean.items():
        print(f"{name + ':':<17} mean {rate:.3f} pages/s, slot busy {busy:.0%} of the crawl")
    print(f"{'hand-over / prefect only:':<27} {mean[b][0] / mean[a][0]:.2f}x the pages/s, "
          f"busy share {mean[a][1]:.0%} -> {mean[b][1]:.0%}")


def run_config(data: Path, seeds: list[str], name: str, plugins: str,
               config: tuple[str, ...], repeat: int) -> float:
    """Crawl `repeat` times with one configuration; print each; the best pages/s."""
    best = 0.0
    for _ in range(repeat):
        secs, snaps, statuses, hook_secs, _busy = crawl(data, seeds, plugins, config)
        best = max(best, snaps / secs)
        print(f"{name:<20} {snaps:>5} {secs:>8.1f} {snaps / secs:>8.2f} "
              f"{os.getloadavg()[0]:>5.2f}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + "; "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(hook_secs.items())), flush=True)
    return best


if __name__ == "__main__":
    main()
