"""Named read queries of the CLI (`status`, `list`, `binaries`, `stats`, `index-html`,
`export --format wacz`).

Each takes a Reader (store/reader.py), so it works on a free index and through a running
crawl alike, and returns plain rows: the command modules format them, with no SQL of their
own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from archiveflow.store.reader import Reader

STATUS_TABLES: Final[tuple[str, ...]] = ("crawl", "snapshot", "archiveresult")
_STATUS_SQL: Final[dict[str, str]] = {
    t: f"SELECT status, count(*) AS n FROM {t} GROUP BY status ORDER BY status"
    for t in STATUS_TABLES
}
_LIST_SQL: Final[str] = """
    SELECT s.id, s.url, s.title, s.status, s.created_at::VARCHAR AS created_at,
           s.depth, string_agg(a.plugin || ':' || a.status, ' ' ORDER BY a.plugin) AS results
    FROM snapshot s LEFT JOIN archiveresult a ON a.snapshot_id = s.id
    WHERE (? IS NULL OR s.crawl_id = ?)
    GROUP BY ALL ORDER BY 5 DESC LIMIT ?
"""
_BINARIES_SQL: Final[str] = """
    SELECT name, status, binprovider AS provider, version, abspath AS path, error,
           sha256, bin_providers, modified_at::VARCHAR AS modified_at
    FROM machine_binary WHERE machine_id = ? ORDER BY name
"""
_VIEWS_SQL: Final[str] = "SELECT count(*) FROM duckdb_views() WHERE view_name = 'plugin_stats'"

_SNAPSHOT_PAGES_SQL: Final[str] = """
    SELECT s.id, s.url, s.title, s.status, s.created_at, s.output_dir, s.depth, s.crawl_id,
           coalesce((SELECT string_agg(t.tag, ', ' ORDER BY t.tag) FROM snapshot_tag t
                     WHERE t.snapshot_id = s.id), '') AS tags
    FROM snapshot s
    WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
    ORDER BY s.created_at DESC, s.id
"""
_RESULT_PAGES_SQL: Final[str] = """
    SELECT a.id, a.snapshot_id, a.plugin, a.hook_name, a.status, a.output_str, a.error,
           a.output_size, a.start_ts, a.end_ts
    FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id
    WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
    ORDER BY a.snapshot_id, a.hook_name
"""
_FILE_PAGES_SQL: Final[str] = """
    SELECT f.archiveresult_id, f.path, f.size, f.mimetype
    FROM output_file f JOIN archiveresult a ON a.id = f.archiveresult_id
    JOIN snapshot s ON s.id = a.snapshot_id
    WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
    ORDER BY f.archiveresult_id, f.path
"""


# Snapshots of a selection with each WARC file their results left (one row per WARC; one
# row with warc NULL for a snapshot without any), for the WACZ export.
_SNAPSHOT_WARCS_SQL: Final[str] = """
    SELECT s.id, s.url, s.title, s.created_at, s.output_dir, w.path AS warc
    FROM snapshot s
    LEFT JOIN (SELECT a.snapshot_id, f.path FROM archiveresult a
               JOIN output_file f ON f.archiveresult_id = a.id
               WHERE f.path LIKE '%.warc.gz' OR f.path LIKE '%.warc') w
           ON w.snapshot_id = s.id
    WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
      AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], s.id))
      AND (?::VARCHAR IS NULL OR EXISTS (SELECT 1 FROM snapshot_tag t
                                         WHERE t.snapshot_id = s.id AND t.tag = ?))
    ORDER BY s.created_at, s.id, w.path
"""


def _dicts(reader: Reader, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    res = reader.query(sql, params)
    return [dict(zip(res.columns, r, strict=True)) for r in res.rows]


def status_counts(reader: Reader) -> dict[str, list[tuple[str, int]]]:
    """(status, count) pairs of every crawl, snapshot and archiveresult."""
    return {t: [(str(s), int(n)) for s, n in reader.query(sql).rows]
            for t, sql in _STATUS_SQL.items()}


def list_snapshots(reader: Reader, crawl_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest snapshots (of one crawl, or all) with each plugin's status."""
    return _dicts(reader, _LIST_SQL, [crawl_id, crawl_id, limit])


def machine_binaries(reader: Reader, machine_id: str) -> list[dict[str, Any]]:
    """Every binary recorded for a machine: status, provider, version, path, error."""
    return _dicts(reader, _BINARIES_SQL, [machine_id])


def has_analytics_views(reader: Reader) -> bool:
    """True when the index has the views of views.sql (an old index may not yet)."""
    rows = reader.query(_VIEWS_SQL).rows
    return bool(rows and rows[0][0])


@dataclass
class ArchiveStats:
    """What `archiveflow stats` shows: totals, then the analytics views' top rows."""

    snapshots: int
    urls: int
    domains: int
    crawls: dict[str, int]
    results: dict[str, int]
    files: int
    bytes: int
    plugins: list[tuple[Any, ...]]
    failure_reasons: list[tuple[Any, ...]]
    top_domains: list[tuple[Any, ...]]
    latest_crawls: list[tuple[Any, ...]]
    machines: list[tuple[Any, ...]]


def archive_stats(reader: Reader) -> ArchiveStats:
    """Totals and the top rows of plugin_stats, plugin_failures, domain_stats,
    crawl_progress and machine_stats."""
    def q(sql: str) -> list[tuple[Any, ...]]:
        return reader.query(sql).rows

    snaps, urls, domains = q("SELECT count(*), count(DISTINCT url), "
                             "count(DISTINCT url_domain(url)) FROM snapshot")[0]
    files, size = q("SELECT count(*), coalesce(sum(size), 0) FROM output_file")[0]
    return ArchiveStats(
        snapshots=snaps, urls=urls, domains=domains,
        crawls=dict(q("SELECT status, count(*) FROM crawl GROUP BY ALL")),
        results=dict(q("SELECT status, count(*) FROM archiveresult GROUP BY ALL")),
        files=files, bytes=size,
        plugins=q("SELECT plugin, results, succeeded, failed, success_rate, p50_seconds, "
                  "p95_seconds, output_bytes FROM plugin_stats ORDER BY plugin"),
        failure_reasons=q("SELECT plugin, failures, reason FROM plugin_failures "
                          "ORDER BY failures DESC, plugin LIMIT 5"),
        top_domains=q("SELECT domain, snapshots, failed, failure_rate, output_bytes "
                      "FROM domain_stats ORDER BY snapshots DESC, domain LIMIT 5"),
        latest_crawls=q("SELECT crawl_id, status, snapshots, sealed, results_done, results, "
                        "elapsed_seconds, snapshots_per_minute FROM crawl_progress "
                        "ORDER BY created_at DESC LIMIT 3"),
        machines=q("SELECT hostname, binaries, installed, failed, failed_names "
                   "FROM machine_stats ORDER BY hostname"),
    )


@dataclass
class IndexPages:
    """The rows of the static HTML index: snapshots, their results, the results' files."""

    snapshots: list[dict[str, Any]]
    results: list[dict[str, Any]]
    files: list[dict[str, Any]]


def index_pages(reader: Reader, crawl_id: str | None = None) -> IndexPages:
    """Every snapshot (newest first), result and output file, of one crawl or all."""
    params = [crawl_id, crawl_id]
    return IndexPages(
        snapshots=_dicts(reader, _SNAPSHOT_PAGES_SQL, params),
        results=_dicts(reader, _RESULT_PAGES_SQL, params),
        files=_dicts(reader, _FILE_PAGES_SQL, params),
    )


def snapshot_warcs(reader: Reader, crawl_id: str | None = None,
                   snapshot_ids: list[str] | None = None,
                   tag: str | None = None) -> list[dict[str, Any]]:
    """The selected snapshots (of one crawl, these ids, with this tag; all when none is
    given) with the WARC files of their results, oldest first: what a WACZ export holds."""
    return _dicts(reader, _SNAPSHOT_WARCS_SQL,
                  [crawl_id, crawl_id, snapshot_ids, snapshot_ids, tag, tag])
