"""The analytics views give the right numbers on an archive whose outcomes are known."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest

from archiveflow.store.db import Store

VIEWS = ["plugin_stats", "plugin_failures", "domain_stats", "snapshot_summary", "url_captures",
         "url_result_history", "disk_by_plugin", "disk_by_mimetype", "disk_by_domain",
         "crawl_progress", "throughput_by_minute", "machine_binaries", "machine_stats"]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
          ) -> list[dict[str, Any]]:
    res = con.execute(sql, params or [])
    cols = [d[0] for d in res.description or []]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


@pytest.fixture(scope="module")
def con(archive: dict[str, Any]) -> Any:
    c = duckdb.connect(str(archive["data"] / "index.duckdb"), read_only=True)
    yield c
    c.close()


def _quantile_cont(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def test_views_work_on_an_empty_index(tmp_path: Path) -> None:
    store = Store(tmp_path / "index.duckdb")
    try:
        for view in VIEWS:
            assert store.execute(f"SELECT * FROM {view}").fetchall() == [], view
    finally:
        store.close()


def test_plugin_stats(con: duckdb.DuckDBPyConnection) -> None:
    stats = {r["plugin"]: r for r in _rows(con, "SELECT * FROM plugin_stats")}
    # 7 snapshots: 6 from the depth-2 crawl, index.html again in the second one.
    assert stats["alwaysfail"]["results"] == 7 and stats["alwaysfail"]["failed"] == 7
    assert stats["alwaysfail"]["success_rate"] == 0
    assert stats["sleepy"]["results"] == 6 and stats["sleepy"]["failed"] == 6
    assert stats["wget"]["results"] == 7 and stats["wget"]["failed"] == 1  # /missing: 404
    assert stats["wget"]["success_rate"] == pytest.approx(6 / 7, abs=1e-4)
    assert stats["wget"]["failure_rate"] == pytest.approx(1 / 7, abs=1e-4)
    for plugin in ("title", "htmltotext"):
        assert (stats[plugin]["results"], stats[plugin]["succeeded"]) == (7, 7), plugin
        assert stats[plugin]["success_rate"] == 1
    assert stats["parse_html_urls"]["results"] == 6
    assert all(r["pending"] == 0 for r in stats.values())
    # Durations: the same percentiles computed here from the raw timestamps.
    for plugin, row in stats.items():
        secs = [r[0] for r in con.execute(
            "SELECT epoch(end_ts) - epoch(start_ts) FROM archiveresult WHERE plugin = ?",
            [plugin]).fetchall()]
        assert row["p50_seconds"] == pytest.approx(_quantile_cont(secs, 0.5), abs=2e-3)
        assert row["p95_seconds"] == pytest.approx(_quantile_cont(secs, 0.95), abs=2e-3)
    assert stats["sleepy"]["p50_seconds"] >= 1.0  # killed at its 1 s timeout


def test_failures_grouped_by_normalised_reason(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, "SELECT * FROM plugin_failures ORDER BY plugin")
    by = {r["plugin"]: r for r in rows}
    assert set(by) == {"alwaysfail", "sleepy", "wget"}, rows
    # Every alwaysfail message names its own snapshot id, yet they are one reason.
    af = by["alwaysfail"]
    assert (af["failures"], af["snapshots"]) == (7, 7)
    assert "<id>" in af["reason"] and "upstream 503" in af["reason"]
    assert "timed out after 1s" in by["sleepy"]["reason"] and by["sleepy"]["failures"] == 6
    assert "404" in by["wget"]["reason"] and by["wget"]["failures"] == 1


def test_domain_stats(con: duckdb.DuckDBPyConnection) -> None:
    (row,) = _rows(con, "SELECT * FROM domain_stats")
    assert row["domain"] == "127.0.0.1"
    assert (row["snapshots"], row["urls"]) == (7, 6)
    # 6 snapshots x 6 plugins + 4 plugins on the second capture
    assert row["results"] == 6 * 6 + 4
    assert row["failed"] == 7 + 6 + 1
    assert row["failure_rate"] == pytest.approx(14 / 40, abs=1e-4)
    assert row["snapshots_with_failures"] == 7


def test_captures_of_a_url_over_time(con: duckdb.DuckDBPyConnection,
                                     archive: dict[str, Any]) -> None:
    rows = _rows(con, "SELECT * FROM url_captures WHERE url = ? ORDER BY capture_no",
                 [f"{archive['site']}/index.html"])
    assert [r["capture_no"] for r in rows] == [1, 2] and rows[0]["captures"] == 2
    assert rows[0]["crawl_id"] != rows[1]["crawl_id"]
    first, second = rows
    assert second["title"] == first["title"] == "Archiveflow Test Site & Home"
    assert second["prev_title"] == first["title"] and second["title_changed"] is False
    assert first["failed_plugins"] == "alwaysfail,sleepy"
    assert second["failed_plugins"] == "alwaysfail" and second["status_changed"] is True
    assert second["bytes_change"] == second["output_bytes"] - first["output_bytes"]
    # Sizes agree with the per-result sizes.
    total = con.execute("SELECT sum(output_size) FROM archiveresult WHERE snapshot_id = ?",
                        [second["snapshot_id"]]).fetchone()
    assert total is not None and second["output_bytes"] == total[0]
    hist = _rows(con, "SELECT * FROM url_result_history WHERE url = ? AND plugin = 'title' "
                 "ORDER BY captured_at", [f"{archive['site']}/index.html"])
    assert [h["status"] for h in hist] == ["succeeded", "succeeded"]
    assert hist[1]["prev_status"] == "succeeded" and hist[1]["size_change"] == 0


def test_disk_use_matches_the_files_on_disk(con: duckdb.DuckDBPyConnection,
                                            archive: dict[str, Any]) -> None:
    data: Path = archive["data"]
    files = _rows(con, """
        SELECT a.plugin, f.path, f.size, f.mimetype, s.output_dir
        FROM output_file f JOIN archiveresult a ON a.id = f.archiveresult_id
        JOIN snapshot s ON s.id = a.snapshot_id""")
    assert files
    on_disk: dict[str, int] = {}
    by_mime: dict[str, int] = {}
    for f in files:
        size = (data / f["output_dir"] / f["path"]).stat().st_size
        on_disk[f["plugin"]] = on_disk.get(f["plugin"], 0) + size
        by_mime[f["mimetype"] or "unknown"] = by_mime.get(f["mimetype"] or "unknown", 0) + size
    view = {r["plugin"]: r["bytes"] for r in _rows(con, "SELECT * FROM disk_by_plugin")}
    assert view == on_disk
    mime = {r["mimetype"]: r["bytes"] for r in _rows(con, "SELECT * FROM disk_by_mimetype")}
    assert mime == by_mime and mime["text/html"] > 0
    (dom,) = _rows(con, "SELECT * FROM disk_by_domain")
    assert dom["bytes"] == sum(on_disk.values()) and dom["snapshots"] == 7


def test_crawl_progress_and_throughput(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, "SELECT * FROM crawl_progress ORDER BY created_at")
    assert [(r["status"], r["snapshots"], r["sealed"], r["queued"], r["started"])
            for r in rows] == [("sealed", 6, 6, 0, 0), ("sealed", 1, 1, 0, 0)]
    assert [(r["results"], r["results_done"], r["results_failed"]) for r in rows] == \
        [(36, 36, 13), (4, 4, 1)]
    assert all(r["elapsed_seconds"] > 0 and r["snapshots_per_minute"] > 0 for r in rows)
    total = con.execute("SELECT sum(results), sum(failed) FROM throughput_by_minute").fetchone()
    assert total == (40, 14)


def test_binaries_per_machine(con: duckdb.DuckDBPyConnection) -> None:
    (machine,) = _rows(con, "SELECT * FROM machine_stats")
    binaries = _rows(con, "SELECT * FROM machine_binaries")
    assert machine["binaries"] == len(binaries)
    assert machine["installed"] == sum(1 for b in binaries if b["status"] == "succeeded")


def test_stats_answers_while_a_crawl_holds_the_index(archive: dict[str, Any]) -> None:
    during = archive["during"]
    assert "stats" in during, "the second crawl ended before it could be queried"
    code, out, err = during["stats"]
    assert code == 0, err
    assert "alwaysfail" in out and "top failure reasons" in out and "snapshots" in out
    code, out, err = during["search"]
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    assert hits and hits[0]["url"].endswith("/page2.html")


def test_stats_command_after_the_crawls(archive: dict[str, Any]) -> None:
    from tests.flows.conftest import run_cli

    proc = run_cli(archive["data"], "stats")
    assert proc.returncode == 0, proc.stderr
    assert "7 snapshots of 6 URLs on 1 domains" in proc.stdout
    assert len(proc.stdout.splitlines()) < 50  # one screen
