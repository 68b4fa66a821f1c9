-- archiveflow analytics views: derived from the tables in schema.sql, replaced on every
-- read-write open (store/db.py), so they carry no data and need no migration.
-- Every view works on an empty index (it returns no rows, or zeros).
-- Documented with example queries in docs/sql.md.

-- The host of a URL, lower-cased ('' when none): the "domain" of every view below.
CREATE OR REPLACE MACRO url_domain(u) AS
    lower(regexp_extract(u, '^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/@?#]*@)?(\[[^\]]+\]|[^/:?#]+)', 1));

-- An error message with its variable parts replaced, so that failures group by reason:
-- ids (UUIDs, long hex), URLs, paths, decimals and numbers of 4+ digits become
-- placeholders; short integers (exit codes, HTTP statuses) are kept; lines are joined.
CREATE OR REPLACE MACRO normalize_error(e) AS
    left(trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
    regexp_replace(regexp_replace(coalesce(e, ''),
        '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<id>', 'g'),
        '[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s''"]+', '<url>', 'g'),
        '(/[^\s/''":]+){2,}/?', '<path>', 'g'),
        '\b[0-9a-fA-F]{16,}\b', '<hex>', 'g'),
        '[0-9]+\.[0-9]+', 'N', 'g'),
        '\b[0-9]{4,}\b', 'N', 'g'),
        '\s+', ' ', 'g')), 200);

-- Seconds an ArchiveResult ran (NULL until it has both timestamps).
CREATE OR REPLACE MACRO result_seconds(start_ts, end_ts) AS
    epoch(end_ts) - epoch(start_ts);

-- Per plugin: results by status, success and failure rates (of finished results), and
-- run time percentiles in seconds.
CREATE OR REPLACE VIEW plugin_stats AS
SELECT
    plugin,
    count(*)                                            AS results,
    count(*) FILTER (WHERE status = 'succeeded')        AS succeeded,
    count(*) FILTER (WHERE status = 'failed')           AS failed,
    count(*) FILTER (WHERE status = 'noresults')        AS noresults,
    count(*) FILTER (WHERE status = 'skipped')          AS skipped,
    count(*) FILTER (WHERE status IN ('queued', 'started')) AS pending,
    round(count(*) FILTER (WHERE status = 'succeeded')
          / nullif(count(*) FILTER (WHERE status NOT IN ('queued', 'started')), 0), 4)
                                                        AS success_rate,
    round(count(*) FILTER (WHERE status = 'failed')
          / nullif(count(*) FILTER (WHERE status NOT IN ('queued', 'started')), 0), 4)
                                                        AS failure_rate,
    round(quantile_cont(result_seconds(start_ts, end_ts), 0.5), 3)  AS p50_seconds,
    round(quantile_cont(result_seconds(start_ts, end_ts), 0.95), 3) AS p95_seconds,
    round(max(result_seconds(start_ts, end_ts)), 3)                 AS max_seconds,
    coalesce(sum(output_size), 0)                       AS output_bytes
FROM archiveresult
GROUP BY plugin;

-- Failed results grouped by plugin and normalised reason, most frequent first.
CREATE OR REPLACE VIEW plugin_failures AS
SELECT
    a.plugin,
    normalize_error(coalesce(nullif(a.error, ''), a.output_str, 'no error message')) AS reason,
    count(*)                       AS failures,
    count(DISTINCT a.snapshot_id)  AS snapshots,
    count(DISTINCT url_domain(s.url)) AS domains,
    any_value(a.error)             AS example_error,
    max(coalesce(a.end_ts, a.modified_at)) AS last_seen
FROM archiveresult a
LEFT JOIN snapshot s ON s.id = a.snapshot_id
WHERE a.status = 'failed'
GROUP BY ALL;

-- Per domain: snapshots and results, failures and the failure rate of finished results.
CREATE OR REPLACE VIEW domain_stats AS
WITH snaps AS (
    SELECT url_domain(url) AS domain, count(*) AS snapshots,
           count(DISTINCT url) AS urls, max(created_at) AS last_captured
    FROM snapshot GROUP BY ALL
), res AS (
    SELECT url_domain(s.url) AS domain,
           count(a.id) AS results,
           count(a.id) FILTER (WHERE a.status = 'succeeded') AS succeeded,
           count(a.id) FILTER (WHERE a.status = 'failed') AS failed,
           count(a.id) FILTER (WHERE a.status NOT IN ('queued', 'started')) AS finished,
           count(DISTINCT s.id) FILTER (WHERE a.status = 'failed') AS snapshots_with_failures,
           coalesce(sum(a.output_size), 0) AS output_bytes
    FROM snapshot s JOIN archiveresult a ON a.snapshot_id = s.id
    GROUP BY ALL
)
SELECT snaps.domain, snaps.snapshots, snaps.urls,
       coalesce(res.results, 0) AS results,
       coalesce(res.succeeded, 0) AS succeeded,
       coalesce(res.failed, 0) AS failed,
       round(res.failed / nullif(res.finished, 0), 4) AS failure_rate,
       coalesce(res.snapshots_with_failures, 0) AS snapshots_with_failures,
       coalesce(res.output_bytes, 0) AS output_bytes,
       snaps.last_captured
FROM snaps LEFT JOIN res USING (domain);

-- One row per Snapshot with its results summed up (the base of the capture views).
CREATE OR REPLACE VIEW snapshot_summary AS
SELECT
    s.id AS snapshot_id, s.crawl_id, s.url, url_domain(s.url) AS domain, s.title, s.status,
    s.depth, s.created_at, s.output_dir,
    count(a.id) AS results,
    count(a.id) FILTER (WHERE a.status = 'succeeded') AS succeeded,
    count(a.id) FILTER (WHERE a.status = 'failed') AS failed,
    coalesce(string_agg(a.plugin, ',' ORDER BY a.plugin) FILTER (WHERE a.status = 'failed'), '')
        AS failed_plugins,
    coalesce(sum(a.output_size), 0) AS output_bytes,
    (SELECT coalesce(string_agg(t.tag, ',' ORDER BY t.tag), '')
     FROM snapshot_tag t WHERE t.snapshot_id = s.id) AS tags
FROM snapshot s LEFT JOIN archiveresult a ON a.snapshot_id = s.id
GROUP BY s.id, s.crawl_id, s.url, s.title, s.status, s.depth, s.created_at, s.output_dir;

-- Every capture of a URL over time (across crawls) and what changed since the one before:
-- title, total output size, which plugins failed.
CREATE OR REPLACE VIEW url_captures AS
SELECT
    url, snapshot_id, crawl_id, captured_at, capture_no, captures,
    title, prev_title, (capture_no > 1 AND title IS DISTINCT FROM prev_title) AS title_changed,
    output_bytes, bytes_change,
    succeeded, failed, failed_plugins, prev_failed_plugins,
    (capture_no > 1 AND failed_plugins IS DISTINCT FROM prev_failed_plugins) AS status_changed
FROM (
    SELECT
        url, snapshot_id, crawl_id, created_at AS captured_at,
        row_number() OVER w AS capture_no,
        count(*) OVER (PARTITION BY url) AS captures,
        title, lag(title) OVER w AS prev_title,
        output_bytes, output_bytes - lag(output_bytes) OVER w AS bytes_change,
        succeeded, failed, failed_plugins,
        lag(failed_plugins) OVER w AS prev_failed_plugins
    FROM snapshot_summary
    WINDOW w AS (PARTITION BY url ORDER BY created_at, snapshot_id)
);

-- The same per URL and plugin: each result's status and size against the previous capture.
CREATE OR REPLACE VIEW url_result_history AS
SELECT
    s.url, a.plugin, s.id AS snapshot_id, s.created_at AS captured_at,
    a.status, lag(a.status) OVER w AS prev_status,
    a.output_size, a.output_size - lag(a.output_size) OVER w AS size_change,
    a.output_str, lag(a.output_str) OVER w AS prev_output_str
FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id
WINDOW w AS (PARTITION BY s.url, a.plugin ORDER BY s.created_at, s.id);

-- Disk used by output files, by plugin, by mimetype and by domain.
CREATE OR REPLACE VIEW disk_by_plugin AS
SELECT a.plugin, count(*) AS files, sum(f.size) AS bytes,
       round(sum(f.size) / 1048576, 3) AS mib
FROM output_file f JOIN archiveresult a ON a.id = f.archiveresult_id
GROUP BY ALL;

CREATE OR REPLACE VIEW disk_by_mimetype AS
SELECT coalesce(f.mimetype, 'unknown') AS mimetype, count(*) AS files, sum(f.size) AS bytes,
       round(sum(f.size) / 1048576, 3) AS mib
FROM output_file f
GROUP BY ALL;

CREATE OR REPLACE VIEW disk_by_domain AS
SELECT url_domain(s.url) AS domain, count(*) AS files, count(DISTINCT s.id) AS snapshots,
       sum(f.size) AS bytes, round(sum(f.size) / 1048576, 3) AS mib
FROM output_file f
JOIN archiveresult a ON a.id = f.archiveresult_id
JOIN snapshot s ON s.id = a.snapshot_id
GROUP BY ALL;

-- Per crawl: snapshots and results by status, elapsed time and throughput so far.
CREATE OR REPLACE VIEW crawl_progress AS
WITH snaps AS (
    SELECT crawl_id,
           count(*) AS snapshots,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status = 'started') AS started,
           count(*) FILTER (WHERE status = 'sealed') AS sealed
    FROM snapshot GROUP BY crawl_id
), res AS (
    SELECT s.crawl_id,
           count(*) AS results,
           count(*) FILTER (WHERE a.status NOT IN ('queued', 'started')) AS results_done,
           count(*) FILTER (WHERE a.status = 'failed') AS results_failed,
           min(a.start_ts) AS first_result_at,
           max(a.end_ts) AS last_result_at
    FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id
    GROUP BY s.crawl_id
)
SELECT
    c.id AS crawl_id, c.status, c.label, c.tags, c.max_depth, c.created_at,
    coalesce(snaps.snapshots, 0) AS snapshots,
    coalesce(snaps.queued, 0) AS queued,
    coalesce(snaps.started, 0) AS started,
    coalesce(snaps.sealed, 0) AS sealed,
    coalesce(res.results, 0) AS results,
    coalesce(res.results_done, 0) AS results_done,
    coalesce(res.results_failed, 0) AS results_failed,
    round(epoch(CASE WHEN c.status = 'sealed' THEN c.modified_at ELSE now() END)
          - epoch(c.created_at), 1) AS elapsed_seconds,
    round(coalesce(snaps.sealed, 0) * 60.0 / nullif(
          epoch(coalesce(res.last_result_at, now())) - epoch(c.created_at), 0), 2)
        AS snapshots_per_minute,
    round(coalesce(res.results_done, 0) * 60.0 / nullif(
          epoch(coalesce(res.last_result_at, now())) - epoch(c.created_at), 0), 2)
        AS results_per_minute
FROM crawl c
LEFT JOIN snaps ON snaps.crawl_id = c.id
LEFT JOIN res ON res.crawl_id = c.id;

-- Throughput over time: results finished (and failed) per minute, across all crawls.
CREATE OR REPLACE VIEW throughput_by_minute AS
SELECT date_trunc('minute', a.end_ts) AS minute,
       count(*) AS results,
       count(*) FILTER (WHERE a.status = 'failed') AS failed,
       count(DISTINCT a.snapshot_id) AS snapshots_touched,
       coalesce(sum(a.output_size), 0) AS output_bytes
FROM archiveresult a
WHERE a.end_ts IS NOT NULL AND a.status NOT IN ('queued', 'started')
GROUP BY ALL;

-- Binaries per machine: what each machine resolved, how, and what failed.
CREATE OR REPLACE VIEW machine_binaries AS
SELECT m.id AS machine_id, m.hostname, m.os, m.arch,
       b.name, b.status, b.version, b.binprovider, b.abspath, b.error, b.modified_at
FROM machine_binary b LEFT JOIN machine m ON m.id = b.machine_id;

CREATE OR REPLACE VIEW machine_stats AS
SELECT m.id AS machine_id, m.hostname, m.os, m.arch,
       count(b.id) AS binaries,
       count(b.id) FILTER (WHERE b.status = 'succeeded') AS installed,
       count(b.id) FILTER (WHERE b.status = 'failed') AS failed,
       coalesce(string_agg(b.name, ',' ORDER BY b.name) FILTER (WHERE b.status = 'failed'), '')
           AS failed_names
FROM machine m LEFT JOIN machine_binary b ON b.machine_id = m.id
GROUP BY ALL;
