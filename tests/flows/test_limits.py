"""Per-plugin concurrency limits hold in both Prefect granularities.

A crawl of four pages at concurrency 4 runs only `fakebrowser` (tests/flows/plugins), a hook
that works 0.4 s and writes when it ran. Configured as the only browser plugin with one
slot, its runs must not overlap: with ARCHIVEFLOW_PREFECT_GRANULARITY=snapshot (the
snapshot's hook walk in the crawl's pool) and =task (each ArchiveResult a Prefect task run
in a snapshot subflow), which once walked the hooks without entering the slot.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.flows.conftest import run_cli

PLUGINS = Path(__file__).resolve().parent / "plugins"
PAGES = ("/index.html", "/page1.html", "/page2.html", "/deep/page4.html")


@pytest.mark.parametrize("granularity", ["snapshot", "task"])
def test_browser_limit_serializes_hook_runs(tmp_path: Path, site_url: str, prefect_api: str,
                                            granularity: str) -> None:
    proc = run_cli(tmp_path, "add", "--allow-private", "--concurrency", "4",
                   "--plugins", "fakebrowser", "--config", f"PLUGINS_PATH={PLUGINS}",
                   "--config", "BROWSER_PLUGINS=fakebrowser",
                   "--config", "BROWSER_CONCURRENCY=1",
                   *(f"{site_url}{p}" for p in PAGES),
                   env={"ARCHIVEFLOW_PREFECT_GRANULARITY": granularity})
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.output_dir, a.status FROM archiveresult a "
            "JOIN snapshot s ON s.id = a.snapshot_id WHERE a.plugin = 'fakebrowser'"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == len(PAGES) and {st for _, st in rows} == {"succeeded"}, rows
    spans = sorted(
        tuple(float(x) for x in (tmp_path / d / "fakebrowser" / "interval.txt")
              .read_text().split())
        for d, _ in rows)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, f"fakebrowser runs overlapped under one slot: {overlaps}"
