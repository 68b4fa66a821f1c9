"""`doctor`: which mode a data folder is in (embedded or shared) and whether each part
answers: the index (file, or catalog + storage), the Prefect API, this machine."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from archiveflow.cli.common import EXIT_FAILED, EXIT_OK, Command, data_folder
from archiveflow.settings import settings


def _line(part: str, ok: bool | None, text: str) -> bool:
    mark = {True: "ok  ", False: "FAIL", None: "note"}[ok]
    print(f"{mark} {part:<9} {text}")
    return ok is not False


def _prefect_ok(url: str) -> tuple[bool, str]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as resp:
            good = resp.status == 200
    except OSError as e:
        return False, f"{url} does not answer: {e}"
    took = (time.perf_counter() - t0) * 1000
    return good, f"{url} answers /health in {took:.0f} ms" if good else f"{url}: {resp.status}"


def _storage_check(storage: str) -> tuple[bool | None, str]:
    if "://" in storage:
        return None, f"{storage}: object storage, not probed (DuckLake reads it above)"
    folder = Path(storage)
    if not folder.is_dir():
        return False, f"{folder} is not a folder here: mount the shared storage"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as e:
        return False, f"{folder} is not writable: {e.strerror or e}"
    return True, f"{folder} is writable"


def _shared(folder: Path, catalog: str) -> bool:
    from archiveflow.store import lake
    from archiveflow.store.db import Store
    from archiveflow.store.errors import StoreError

    ok = _line("mode", True, f"shared index (ARCHIVEFLOW_CATALOG={lake.redact(catalog)})")
    try:
        t0 = time.perf_counter()
        version = lake.probe_catalog(catalog)
        ok &= _line("catalog", True, f"PostgreSQL {version} answers "
                    f"({(time.perf_counter() - t0) * 1000:.0f} ms)")
    except StoreError as e:
        return _line("catalog", False, str(e)) and False
    storage = settings().storage or str(folder / "lake")
    try:
        t0 = time.perf_counter()
        store = Store(folder / "index.duckdb", read_only=True)
        try:
            cur = store.cursor()
            path = cur.execute("SELECT options['data_path'] FROM duckdb_databases() "
                               "WHERE database_name = ?", [lake.LAKE]).fetchone()
            storage = str(path[0]) if path and path[0] else storage
            tables = {r[0] for r in cur.execute("SHOW TABLES").fetchall()}
            if "snapshot" not in tables:
                ok &= _line("index", None, "DuckLake catalog attached, no archiveflow tables "
                            "yet (the first `add` or `worker` creates them)")
            else:
                row = cur.execute(
                    "SELECT (SELECT max(version) FROM schema_version), "
                    "(SELECT count(*) FROM snapshot), (SELECT count(*) FROM machine), "
                    "(SELECT count(*) FROM crawl WHERE status <> 'sealed')").fetchone()
                assert row is not None
                ok &= _line("index", True, f"DuckLake answers in "
                            f"{(time.perf_counter() - t0):.1f}s: schema v{row[0]}, {row[1]} "
                            f"snapshots, {row[2]} machines, {row[3]} unfinished crawls")
                _binaries(cur)
        finally:
            store.close()
    except StoreError as e:
        ok &= _line("index", False, str(e))
    good, text = _storage_check(storage)
    ok &= _line("storage", good, f"data files: {text}")
    good, text = _storage_check(str(folder))
    ok &= _line("files", good, f"data folder (hook outputs, shared by every machine): {text}")
    return ok


def _binaries(cur: Any) -> None:
    """This machine's Binary rows in the shared index, and what installs them."""
    from archiveflow.tasks.machine import this_machine

    me = this_machine().id
    by = dict(cur.execute("SELECT status, list(name ORDER BY name) FROM machine_binary "
                          "WHERE machine_id = ? GROUP BY status", [me]).fetchall())
    # deployments/binaries.deployment_name's (not imported: it imports Prefect)
    how = (f"`archiveflow worker` serves install_binaries/install-binaries-{me} and runs it "
           "at its start")
    if not by:
        _line("binaries", None, f"none recorded for machine {me} yet: {how} (or run "
              "`archiveflow install`)")
        return
    parts = [f"{len(names)} {status} ({', '.join(names)})"
             for status, names in sorted(by.items())]
    _line("binaries", None, f"machine {me}: {'; '.join(parts)}; {how}"
          + ("; a worker skips the plugins of failed ones" if "failed" in by else ""))


def _embedded(folder: Path) -> bool:
    from archiveflow.store.db import Store
    from archiveflow.store.errors import IndexLocked, StoreError

    ok = _line("mode", True, "embedded index (one machine; ARCHIVEFLOW_CATALOG unset)")
    index = folder / "index.duckdb"
    if not index.exists():
        return _line("index", None, f"{index} does not exist yet (the first `add` makes it)")
    try:
        store = Store(index, read_only=True)
        try:
            row = store.cursor().execute("SELECT count(*) FROM snapshot").fetchone()
        finally:
            store.close()
        ok &= _line("index", True, f"{index}: {row[0] if row else 0} snapshots")
    except IndexLocked as e:
        ok &= _line("index", True, f"{index}: in use by a running archiveflow ({e.holder}); "  # type: ignore[attr-defined]
                    "reads go through it")
    except StoreError as e:
        ok &= _line("index", False, f"{index}: {e}")
    return ok


def cmd_doctor(args: argparse.Namespace) -> int:
    folder = data_folder(args).resolve()
    cfg = settings()
    ok = _shared(folder, cfg.catalog) if cfg.catalog else _embedded(folder)
    url = os.environ.get("PREFECT_API_URL")
    if url:
        good, text = _prefect_ok(url)
        ok &= _line("prefect", good, f"external API (PREFECT_API_URL): {text}")
    else:
        from archiveflow.flows.prefect_server import server_status

        st = server_status(folder)
        note = ("; with a shared index set PREFECT_API_URL on every machine to see every "
                "machine's runs in one UI" if cfg.catalog else "")
        if st.running:
            ok &= _line("prefect", st.healthy, f"local server {st.api_url} (pid {st.pid}) "
                        f"{'answers' if st.healthy else 'does not answer'}{note}")
        else:
            _line("prefect", None, f"local server not running (started on demand){note}")
    from archiveflow.tasks.machine import this_machine

    me = this_machine()
    lib = cfg.lib_dir or folder / "lib"
    _line("machine", None, f"{me.id} ({me.hostname}, {me.os} {me.arch}); binaries in {lib}")
    return EXIT_OK if ok else EXIT_FAILED


def register(command: Command) -> None:
    """Add `doctor`."""
    command("doctor", cmd_doctor, "Say whether the index is embedded or shared, and whether "
            "each part answers (index, catalog, storage, Prefect API).")
