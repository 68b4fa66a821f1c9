"""CLI commands that ask the archive questions: stats, search, export, index-html, reindex.

Every read goes through a Reader, so these commands work while a crawl runs (the running
archiveflow answers them); only `reindex` and `search --rebuild` need the index free.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from archiveflow.cli.common import (
    EXIT_OK,
    CliError,
    Command,
    data_folder,
    open_index,
    print_table,
    say,
)


def _reader(args: argparse.Namespace) -> Any:
    """A Reader of the index; creates the analytics views first if the index predates them."""
    from archiveflow.store.queries import has_analytics_views

    reader = open_index(args, read_only=True)
    if reader.via_writer or has_analytics_views(reader):
        return reader
    # An index last written by an archiveflow without views.sql: a read-write open adds them.
    reader.close()
    from archiveflow.store.db import Store
    from archiveflow.store.errors import StoreError

    try:
        Store(data_folder(args).resolve() / "index.duckdb").close()
    except StoreError as e:
        raise CliError(str(e)) from e
    return open_index(args, read_only=True)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f}%"


def _mib(n: Any) -> str:
    """A byte count for people: 812 B, 3.4 KiB, 1.2 MiB, 5.0 GiB."""
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# --- stats ----------------------------------------------------------------------------------

def cmd_stats(args: argparse.Namespace) -> int:
    """One screen: totals, plugins, failure reasons, domains, crawls, machines."""
    from archiveflow.store.queries import archive_stats

    with _reader(args) as r:
        st = archive_stats(r)
    print(f"{st.snapshots} snapshots of {st.urls} URLs on {st.domains} domains; crawls: "
          + (", ".join(f"{k} {v}" for k, v in sorted(st.crawls.items())) or "none"))
    print("results: " + (", ".join(f"{k} {v}" for k, v in sorted(st.results.items()))
                         or "none") + f"; {st.files} files, {_mib(st.bytes)}")
    if st.plugins:
        print()
        print_table(["plugin", "results", "ok", "failed", "ok rate", "p50 s", "p95 s", "disk"],
                    [(p, n, ok, f, _pct(rate), p50, p95, _mib(b))
                     for p, n, ok, f, rate, p50, p95, b in st.plugins])
    if st.failure_reasons:
        print("\ntop failure reasons")
        print_table(["plugin", "n", "reason"], st.failure_reasons)
    if st.top_domains:
        print("\ntop domains")
        print_table(["domain", "snapshots", "failed results", "fail rate", "disk"],
                    [(d, n, f, _pct(rate), _mib(b)) for d, n, f, rate, b in st.top_domains])
    if st.latest_crawls:
        print("\nlatest crawls")
        print_table(["crawl", "status", "snapshots", "sealed", "results done", "results",
                     "elapsed s", "snapshots/min"], st.latest_crawls)
    if st.machines:
        print("\nmachines")
        print_table(["host", "binaries", "installed", "failed", "failed names"], st.machines)
    return EXIT_OK


# --- search ---------------------------------------------------------------------------------

def cmd_search(args: argparse.Namespace) -> int:
    """Ranked full-text search over every snapshot's text."""
    from archiveflow.store import search
    from archiveflow.store.errors import StoreError

    try:
        since = date.fromisoformat(args.since) if args.since else None
    except ValueError as e:
        raise CliError(f"--since {args.since!r} is not a date (YYYY-MM-DD)", 2) from e
    q = search.SearchQuery(args.query, domain=args.domain, tag=args.tag, since=since,
                           limit=args.limit)
    index = data_folder(args).resolve() / "index.duckdb"
    started = time.perf_counter()
    try:
        hits = search.run_search(index, q, rebuild=args.rebuild)
    except StoreError as e:
        raise CliError(str(e)) from e
    took = time.perf_counter() - started
    if args.json:
        for h in hits:
            print(json.dumps(h, default=str))
        return EXIT_OK
    if not hits:
        say(f"no snapshot matches {args.query!r} ({took:.2f}s)")
        return EXIT_OK
    for i, h in enumerate(hits, 1):
        when = h["captured_at"].strftime("%Y-%m-%d") if h["captured_at"] else "-"
        print(f"{i:>2}. {h['title'] or h['url']}  [{h['score']}]  {when}"
              + (f"  #{h['tags']}" if h["tags"] else ""))
        print(f"    {h['url']}")
        print(f"    {h['snippet']}")
    say(f"{len(hits)} result(s) in {took:.2f}s")
    return EXIT_OK


# --- export / index-html --------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    """Snapshots and results as json/csv/parquet files, a static HTML index, or a WACZ."""
    if args.format == "html":
        return _html(args, Path(args.output) if args.output else None)
    if args.format == "wacz":
        return _wacz(args)
    if args.snapshot or args.tag:
        raise CliError("--snapshot and --tag select what goes into a WACZ (--format wacz); "
                       "the table exports take --crawl", 2)
    from archiveflow.store import export

    if not args.output:
        raise CliError("--output DIR is needed: the folder to write "
                       "snapshots/results/output_files into", 2)
    out = Path(args.output)
    started = time.perf_counter()
    with open_index(args, read_only=True) as reader:
        written = export.export_index(reader, args.format, out, args.crawl)
    for _name, (path, rows) in written.items():
        print(f"{path}  {rows} rows")
    say(f"exported in {time.perf_counter() - started:.2f}s")
    return EXIT_OK


def _wacz(args: argparse.Namespace) -> int:
    """A WACZ of a crawl or a selection, from the snapshots' WARCs."""
    from archiveflow.store.queries import snapshot_warcs
    from archiveflow.store.wacz import WaczError, write_wacz

    if not args.output:
        raise CliError("--output is needed: a .wacz file, or a folder to write "
                       "<crawl id or 'archive'>.wacz into", 2)
    out = Path(args.output)
    if out.suffix.lower() != ".wacz":
        out = out / f"{args.crawl or 'archive'}.wacz"
    started = time.perf_counter()
    with open_index(args, read_only=True) as reader:
        rows = snapshot_warcs(reader, args.crawl, args.snapshot or None, args.tag)
    if not rows:
        raise CliError("no snapshot matches the selection (--crawl/--snapshot/--tag)")
    try:
        report = write_wacz(rows, data_folder(args).resolve(), out,
                            title=f"archiveflow {args.crawl or 'archive'}")
    except WaczError as e:
        raise CliError(str(e)) from e
    print(f"{report.path}  {report.pages} pages, {report.warcs} WARCs, {_mib(report.size)}")
    for url in report.without_warc:
        say(f"not in the WACZ (no WARC): {url}")
    say(f"exported in {time.perf_counter() - started:.2f}s")
    return EXIT_OK


def _html(args: argparse.Namespace, out: Path | None) -> int:
    from archiveflow.cli.html_index import write_html_index
    from archiveflow.store.queries import index_pages, snapshot_warcs
    from archiveflow.store.wacz import WaczError, write_wacz

    data_dir = data_folder(args).resolve()
    out = (out or data_dir / "html").resolve()
    waczs: dict[str, Path] = {}
    with open_index(args, read_only=True) as reader:
        pages = index_pages(reader, args.crawl)
        crawls = sorted({s["crawl_id"] for s in pages.snapshots})
        warcs = {c: snapshot_warcs(reader, c) for c in crawls} if args.wacz else {}
    for crawl_id, rows in warcs.items():
        # One WACZ per crawl beside the pages, so the index links a replayable archive.
        try:
            waczs[crawl_id] = write_wacz(rows, data_dir, out / "wacz" / f"{crawl_id}.wacz",
                                         title=f"archiveflow {crawl_id}").path
        except WaczError as e:
            say(f"crawl {crawl_id}: no WACZ: {e}")
    index = write_html_index(pages, data_dir, out, waczs)
    print(index)
    return EXIT_OK


def cmd_index_html(args: argparse.Namespace) -> int:
    """Write the static HTML index (same as export --format html)."""
    return _html(args, Path(args.output) if args.output else None)


# --- reindex --------------------------------------------------------------------------------

def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild index.duckdb from the archive folder; the old index is moved aside."""
    from archiveflow.store.errors import StoreError
    from archiveflow.tasks.reindex import reindex

    try:
        report = reindex(data_folder(args).resolve(), on_progress=say)
    except StoreError as e:
        raise CliError(str(e)) from e
    print(report.summary())
    return EXIT_OK


def register(add_command: Command) -> None:
    """Add this module's commands to the CLI."""

    def command(name: str, fn: Callable[[argparse.Namespace], int], helptext: str
                ) -> argparse.ArgumentParser:
        return add_command(name, fn, helptext)

    command("stats", cmd_stats, "A one-screen summary of the archive (works during a crawl).")

    s = command("search", cmd_search, "Full-text search over every snapshot's text (BM25).")
    s.add_argument("query", help='words to look for; "in double quotes" for an exact phrase')
    s.add_argument("--domain", help="only this domain (and its subdomains)")
    s.add_argument("--tag", help="only snapshots with this tag")
    s.add_argument("--since", help="only snapshots captured on or after this date (YYYY-MM-DD)")
    s.add_argument("--limit", type=int, default=10, help="at most this many results (10)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--rebuild", action="store_true",
                   help="re-read every snapshot's text from its folder and rebuild the index")

    e = command("export", cmd_export,
                "Export snapshots and results (json/csv/parquet files), or a static HTML index.")
    e.add_argument("--format", choices=["json", "csv", "parquet", "html", "wacz"],
                   default="json",
                   help="wacz: one web archive of the selected snapshots' WARCs, with pages "
                        "and their text, for ReplayWeb.page or pywb")
    e.add_argument("--output", help="folder to write into (html: default <data>/html; "
                                    "wacz: a .wacz file or a folder)")
    e.add_argument("--crawl", help="only this crawl id")
    e.add_argument("--snapshot", action="append", default=[], metavar="ID",
                   help="wacz: only this snapshot (repeat for more)")
    e.add_argument("--tag", help="wacz: only snapshots with this tag")
    e.add_argument("--no-wacz", dest="wacz", action="store_false",
                   help="html: do not write (and link) a WACZ of each crawl")

    h = command("index-html", cmd_index_html,
                "Write a static HTML index that opens from the file system (no server).")
    h.add_argument("--output", help="folder to write into (default <data>/html)")
    h.add_argument("--crawl", help="only this crawl id")
    h.add_argument("--no-wacz", dest="wacz", action="store_false",
                   help="do not write (and link) a WACZ of each crawl under <output>/wacz/")

    command("reindex", cmd_reindex,
            "Rebuild index.duckdb from the archive folder alone; the old one is kept aside.")

