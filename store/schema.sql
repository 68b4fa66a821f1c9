-- archiveflow index schema, version 1.
-- Idempotent: every statement may run again on an existing index.
-- The files under the data folder are the source of truth; these tables index them.
-- Status values are CHECKed here and mirrored as Literal aliases in store/records.py.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS machine (
    id          VARCHAR PRIMARY KEY,
    hostname    VARCHAR NOT NULL,
    os          VARCHAR NOT NULL,
    arch        VARCHAR NOT NULL,
    config      JSON NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    modified_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS crawl (
    id          VARCHAR PRIMARY KEY,
    status      VARCHAR NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'started', 'sealed')),
    retry_at    TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    modified_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    output_dir  VARCHAR NOT NULL,
    username    VARCHAR NOT NULL DEFAULT 'default',
    label       VARCHAR,
    seeds       VARCHAR NOT NULL,          -- seed text, or a path/URL of a seed file
    parser      VARCHAR,                   -- importer forced by the user, else auto-detected
    max_depth   INTEGER NOT NULL DEFAULT 0 CHECK (max_depth >= 0),
    max_urls    INTEGER,                   -- cap on snapshots in this crawl (NULL: none)
    tags        VARCHAR NOT NULL DEFAULT '',  -- comma-separated, given to every snapshot
    plugins     VARCHAR,                   -- comma-separated allow-list (NULL: all enabled)
    url_allow   VARCHAR,                   -- regex a discovered URL must match
    url_deny    VARCHAR,                   -- regex a discovered URL must not match
    config      JSON NOT NULL DEFAULT '{}',
    schedule    VARCHAR,                   -- deployment name when started by a schedule
    flow_run_id VARCHAR,
    machine_id  VARCHAR
);

-- snapshot, archiveresult and process have no PRIMARY KEY on id: ids are UUIDv7 made by
-- uuidv7()/new_id(), unique by construction and time-ordered, so DuckDB's zone maps find them;
-- an ART index per id doubled the cost of a bulk insert (100k rows: 4.7 s → 2.5 s, loaded).
-- The natural keys stay UNIQUE: one Snapshot per URL per crawl, one result per hook.
CREATE TABLE IF NOT EXISTS snapshot (
    id            VARCHAR NOT NULL,
    crawl_id      VARCHAR NOT NULL,
    url           VARCHAR NOT NULL,
    status        VARCHAR NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'started', 'sealed')),
    retry_at      TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    modified_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    output_dir    VARCHAR NOT NULL,
    depth         INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0),
    parent_id     VARCHAR,
    title         VARCHAR,
    bookmarked_at TIMESTAMPTZ,             -- when the user saved it (bookmark/feed date)
    config        JSON NOT NULL DEFAULT '{}',
    UNIQUE (crawl_id, url)
);

CREATE TABLE IF NOT EXISTS archiveresult (
    id           VARCHAR NOT NULL,
    snapshot_id  VARCHAR NOT NULL,
    plugin       VARCHAR NOT NULL,
    hook_name    VARCHAR NOT NULL,
    status       VARCHAR NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'started', 'succeeded', 'failed', 'skipped', 'noresults')),
    retry_at     TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    modified_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    output_dir   VARCHAR NOT NULL,
    is_background BOOLEAN NOT NULL DEFAULT false,
    attempts     INTEGER NOT NULL DEFAULT 0,
    start_ts     TIMESTAMPTZ,
    end_ts       TIMESTAMPTZ,
    exit_code    INTEGER,
    output_str   VARCHAR,
    output_json  JSON,
    error        VARCHAR,
    output_size  BIGINT,
    output_count INTEGER,
    UNIQUE (snapshot_id, hook_name)
);

-- One row per file an ArchiveResult left (insert-only: lists stay out of PK tables).
CREATE TABLE IF NOT EXISTS output_file (
    archiveresult_id VARCHAR NOT NULL,
    path             VARCHAR NOT NULL,    -- relative to the snapshot folder
    size             BIGINT NOT NULL,
    mimetype         VARCHAR
);

CREATE TABLE IF NOT EXISTS machine_binary (  -- "binary" is an SQL keyword
    id            VARCHAR PRIMARY KEY,
    machine_id    VARCHAR NOT NULL,
    name          VARCHAR NOT NULL,
    status        VARCHAR NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'started', 'succeeded', 'failed')),
    retry_at      TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    modified_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    output_dir    VARCHAR NOT NULL,
    bin_providers VARCHAR NOT NULL DEFAULT 'env',
    overrides     JSON NOT NULL DEFAULT '{}',
    abspath       VARCHAR,
    version       VARCHAR,
    sha256        VARCHAR,
    binprovider   VARCHAR,
    error         VARCHAR,
    UNIQUE (machine_id, name)
);

CREATE TABLE IF NOT EXISTS tag (
    name       VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS snapshot_tag (
    snapshot_id VARCHAR NOT NULL,
    tag         VARCHAR NOT NULL,
    PRIMARY KEY (snapshot_id, tag)
);

-- One row per hook process started (analytics and orphan cleanup).
CREATE TABLE IF NOT EXISTS process (
    id          VARCHAR NOT NULL,
    owner_type  VARCHAR NOT NULL CHECK (owner_type IN ('crawl', 'snapshot', 'archiveresult', 'binary')),
    owner_id    VARCHAR NOT NULL,
    machine_id  VARCHAR,
    hook_name   VARCHAR NOT NULL,
    pid         INTEGER,
    cmd         VARCHAR NOT NULL,
    cwd         VARCHAR NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ,
    exit_code   INTEGER
);

-- Hook output lines that were JSON objects but failed validation.
CREATE TABLE IF NOT EXISTS record_error (
    owner_id   VARCHAR NOT NULL,
    hook_name  VARCHAR NOT NULL,
    line       VARCHAR NOT NULL,
    error      VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- No index on status columns: DuckDB rewrites an indexed row on every UPDATE of it.
CREATE INDEX IF NOT EXISTS snapshot_url ON snapshot (url);
