"""`archiveflow`: the command line. One entry point; `--help` on every command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

# Modules that add commands: each has `register(command)` (see build_parser).
EXTENSIONS: tuple[str, ...] = ("flows.cli_schedule", "flows.cli_analytics")


class CliError(Exception):
    """A one-line error for the user; the message says what is wrong and what to do."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("ARCHIVEFLOW_DATA_DIR") or "./data")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _open(args: argparse.Namespace, *, read_only: bool = False, write: bool = False) -> Any:
    from store.errors import StoreError
    from tasks.runtime import open_runtime

    data_dir = _data_dir(args)
    try:
        if read_only:
            from flows import readers

            return readers.open_reader(data_dir, write=write)
        wait = float(os.environ.get("ARCHIVEFLOW_LOCK_WAIT", "600"))
        return open_runtime(data_dir, wait_for_lock=wait, on_wait=_say)
    except PermissionError as e:
        raise CliError(f"{e}; choose another --data-dir or fix its permissions") from e
    except OSError as e:
        raise CliError(f"cannot use data folder {data_dir}: {e.strerror or e}") from e
    except StoreError as e:
        raise CliError(str(e)) from e


# --- table output -------------------------------------------------------------------------

def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None) -> None:
    """A plain aligned text table."""
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    widths = [min(w, 60) for w in widths]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(),
              file=out)


# --- add / resume -------------------------------------------------------------------------

_SEED_FILE_SUFFIXES = (".xml", ".rss", ".atom", ".jsonl", ".txt")
_SEED_FILE_NAMES = ("feed", "rss", "atom")
_SEED_FILE_PREFIXES = ("sitemap", "bookmark")


def _looks_like_seed_file(arg: str) -> bool:
    """A URL that names a list of URLs (the rule the seeds plugin applies too)."""
    if not arg.startswith(("http://", "https://")):
        return False
    path = arg.split("?", 1)[0].split("#", 1)[0].lower()
    path = path.split("://", 1)[1].partition("/")[2].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    return (path.endswith(_SEED_FILE_SUFFIXES) or last in _SEED_FILE_NAMES
            or last.startswith(_SEED_FILE_PREFIXES))


def _read_seeds(inputs: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """Seed text from args, a file, or stdin; plus URL args refused with reasons."""
    from tasks.urls import check_url

    if inputs == ["-"]:
        text = sys.stdin.read()
        if not text.strip():
            raise CliError("no input on stdin: pipe URLs or a file into `archiveflow add -`",
                           EXIT_USAGE)
        return text, []
    if len(inputs) == 1 and Path(inputs[0]).is_file():
        return str(Path(inputs[0]).resolve()), []
    if len(inputs) == 1 and _looks_like_seed_file(inputs[0]):
        return inputs[0], []  # a feed, sitemap or bookmarks URL: the seed parser fetches it
    refused = []
    kept = []
    for raw in inputs:
        url, reason = check_url(raw, allow_private=True, allow_file=True)
        if url is None:
            refused.append((raw, reason or "refused"))
        else:
            kept.append(raw)
    # As JSONL, so the seed parser takes each URL verbatim: its text rules cut a URL at
    # quotes (URLs in prose end there) and skip URLs without a host (file:///…) silently.
    return "\n".join(json.dumps({"url": u}) for u in kept), refused


def _refused_lines(inputs: list[str], text: str | None, *, allow_private: bool,
                   allow_file: bool) -> list[tuple[str, str]]:
    """Lines of a URL-per-line file (or stdin) that are no archivable URL, with reasons.

    The seed parser picks URLs out of text and skips anything else silently; a line that is
    one token is meant as a URL, so the user is told why it is not taken. Markup and JSONL
    inputs are left to their parsers."""
    from tasks.urls import check_url

    if text is None:
        if len(inputs) != 1 or not Path(inputs[0]).is_file():
            return []
        with open(inputs[0], "rb") as f:
            text = f.read(64 * 1024 * 1024).decode("utf-8", errors="replace")
    if text.lstrip("\ufeff \t\r\n")[:1] in ("<", "{", "["):
        return []
    out = []
    for line in text.splitlines():
        raw = line.strip()
        if not raw or raw.startswith("#") or any(c in raw for c in " \t"):
            continue
        url, reason = check_url(raw, allow_private=allow_private, allow_file=allow_file)
        if url is None:
            out.append((raw, reason or "refused"))
    return out


class Progress:
    """A live line of snapshot and result counts for one crawl, from the index."""

    def __init__(self, rt: Any, crawl_id: str, interval: float = 0.5) -> None:
        self.rt, self.crawl_id, self.interval = rt, crawl_id, interval
        self._stop = threading.Event()
        self._tty = sys.stderr.isatty()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.monotonic()

    def line(self) -> str:
        from store import results, snapshots

        cur = self.rt.store.cursor()
        s = snapshots.counts(cur, self.crawl_id)
        r = results.result_counts(cur, self.crawl_id)
        total = sum(s.values())
        res = " ".join(f"{k} {v}" for k, v in sorted(r.items()))
        return (f"[{time.monotonic() - self.started:6.1f}s] snapshots {s.get('sealed', 0)}/"
                f"{total} done, {s.get('started', 0)} running, {s.get('queued', 0)} queued"
                f" | results: {res or '-'}")

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.wait(self.interval):
            if not self._tty and time.monotonic() - last < 5:
                continue  # a log gets a line every 5 s: don't query the index in between
            try:
                text = self.line()
            except Exception:  # noqa: BLE001 - progress must never break a crawl
                continue
            if self._tty:
                print("\r" + text[:160].ljust(160), end="", file=sys.stderr, flush=True)
            else:
                _say(text)
                last = time.monotonic()

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._tty:
            print("\r" + " " * 160 + "\r", end="", file=sys.stderr, flush=True)


def run_crawl(rt: Any, crawl_id: str, concurrency: int, prefect_ready: Any = None
              ) -> dict[str, Any]:
    """Run a crawl in this process with a live progress line.

    Prefect is kept off the critical path of the first hook: its server is reused or
    started, and its engine imported, in a background thread (`prefect_ready`, started by
    the caller as early as it can) while this thread claims the crawl and runs the on_Crawl
    hooks (seed parsing); the crawl flow then takes over from there.
    """
    from flows import context
    from flows.runtime import start_in_background
    from tasks import work

    # The live progress line is the display; Prefect's per-run INFO lines would bury it.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if prefect_ready is None:
        prefect_ready = start_in_background(rt.data_dir)
    current = context.install(rt)
    try:
        with Progress(rt, crawl_id):
            crawl = work.claim_crawl(rt, crawl_id)
            current.slots[f"{crawl_id}:start"] = (crawl, work.run_crawl_hooks(rt, crawl))
            prefect_ready.result()
            from flows.crawl import crawl_flow

            return asyncio.run(crawl_flow(crawl_id, concurrency=concurrency, started=True))
    finally:
        context.uninstall()


def summarize(rt: Any, crawl_id: str) -> None:
    """Per-plugin result counts of a crawl, and where its files are."""
    cur = rt.store.cursor()
    rows = cur.execute(
        """
        SELECT a.plugin, count(*) FILTER (WHERE a.status = 'succeeded'),
               count(*) FILTER (WHERE a.status = 'noresults'),
               count(*) FILTER (WHERE a.status = 'skipped'),
               count(*) FILTER (WHERE a.status = 'failed'),
               any_value(a.error) FILTER (WHERE a.status = 'failed')
        FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id
        WHERE s.crawl_id = ? GROUP BY a.plugin ORDER BY a.plugin
        """,
        [crawl_id],
    ).fetchall()
    snaps = cur.execute("SELECT count(*) FROM snapshot WHERE crawl_id = ?", [crawl_id]).fetchone()
    print(f"crawl {crawl_id}: {snaps[0] if snaps else 0} snapshots")
    print_table(["plugin", "succeeded", "noresults", "skipped", "failed", "a failure"], rows)
    print(f"files: {rt.data_dir}/users/  index: {rt.data_dir}/index.duckdb")


def cmd_add(args: argparse.Namespace) -> int:
    from store import crawls
    from tasks import work

    if not args.inputs:
        raise CliError("nothing to add: give URLs, a file, or - for stdin", EXIT_USAGE)
    seeds, refused = _read_seeds(args.inputs)
    for raw, reason in refused:
        _say(f"refused {raw!r}: {reason}")
    if not seeds.strip():
        raise CliError("no valid URL to archive (see the reasons above)", EXIT_USAGE)
    bad = [kv for kv in args.config or [] if "=" not in kv or not kv.split("=", 1)[0].strip()]
    if bad:
        raise CliError(f"--config takes KEY=VALUE, got {bad[0]!r}", EXIT_USAGE)
    config = dict(kv.split("=", 1) for kv in args.config or [])
    if config.get("PLUGINS_PATH"):  # stored with the crawl: relative to here, not to a hook
        config["PLUGINS_PATH"] = os.pathsep.join(
            str(Path(p).expanduser().absolute()) for p in config["PLUGINS_PATH"].split(
                os.pathsep) if p.strip())
    if args.allow_private:
        config["URL_ALLOW_PRIVATE"] = "true"
    # Reuse-or-start the Prefect server and import its engine while this thread opens the
    # index and runs the first hooks: Prefect stays off the path to the first hook.
    from flows.runtime import start_in_background

    prefect_ready = start_in_background(_data_dir(args).resolve())
    rt = _open(args)
    try:
        ctx = work.crawl_context(rt, {"config": config})
        said = {raw for raw, _ in refused}
        for raw, reason in _refused_lines(
                args.inputs, seeds if args.inputs == ["-"] else None,
                allow_private=ctx.allow_private, allow_file=ctx.allow_file):
            if raw not in said:
                said.add(raw)
                refused.append((raw, reason))
                _say(f"refused {raw!r}: {reason}")
        work.recover_stale(rt)
        crawl = crawls.create_crawl(
            rt.store.cursor(), seeds=seeds, max_depth=args.depth, tags=",".join(args.tag or []),
            plugins=args.plugins, url_allow=args.allow, url_deny=args.deny,
            max_urls=args.max_urls, parser=args.parser, config=config,
            machine_id=rt.machine.id)
        _say(f"crawl {crawl['id']} queued: depth {args.depth}, data folder {rt.data_dir}")
        result = run_crawl(rt, crawl["id"], args.concurrency, prefect_ready)
        for url, reason in result["refused"]:
            if url not in said:
                _say(f"refused {url!r}: {reason}")
        for failure in result["failures"]:
            _say(f"error: {failure.splitlines()[0] if failure else 'failed'}")
        summarize(rt, crawl["id"])
        if result["failures"] and result["snapshots"] == 0:
            return EXIT_FAILED
        if result["snapshots"] == 0:
            _say("no URL was archived: the input held no archivable URL")
            return EXIT_FAILED
        return EXIT_PARTIAL if refused or result["refused"] else EXIT_OK
    finally:
        rt.close()


def cmd_resume(args: argparse.Namespace) -> int:
    from store import crawls
    from tasks import work

    rt = _open(args)
    try:
        released = work.recover_stale(rt)
        todo = crawls.unfinished_crawls(rt.store.cursor())
        if not todo:
            _say("nothing to resume: every crawl is sealed")
            return EXIT_OK
        _say(f"resuming {len(todo)} crawl(s); {released} interrupted row(s) released")
        for crawl in todo:
            run_crawl(rt, crawl["id"], args.concurrency)
            summarize(rt, crawl["id"])
        return EXIT_OK
    finally:
        rt.close()


# --- status / list / sql ------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    reader = _open(args, read_only=True)
    with reader:
        for table in ("crawl", "snapshot", "archiveresult"):
            rows = reader.query(f"SELECT status, count(*) AS n FROM {table} GROUP BY status "
                                "ORDER BY status")
            print(f"{table}: " + (", ".join(f"{s} {n}" for s, n in rows.rows) or "none"))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    reader = _open(args, read_only=True)
    sql = """
        SELECT s.id, s.url, s.title, s.status, s.created_at::VARCHAR AS created_at,
               s.depth, string_agg(a.plugin || ':' || a.status, ' ' ORDER BY a.plugin) AS results
        FROM snapshot s LEFT JOIN archiveresult a ON a.snapshot_id = s.id
        WHERE (? IS NULL OR s.crawl_id = ?)
        GROUP BY ALL ORDER BY 5 DESC LIMIT ?
    """
    with reader:
        res = reader.query(sql, [args.crawl, args.crawl, args.limit])
    if args.json:
        for row in res.rows:
            print(json.dumps(dict(zip(res.columns, row, strict=True)), default=str))
    else:
        print_table(["url", "title", "status", "results"],
                    [(r[1], r[2], r[3], r[6]) for r in res.rows])
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    from flows import readers

    query = args.query
    if query == "-" or query is None:
        query = sys.stdin.read()
    elif "\n" not in query and query.endswith(".sql") and Path(query).is_file():
        query = Path(query).read_text(encoding="utf-8")
    reader = _open(args, read_only=True, write=args.write)
    with reader:
        try:
            res = reader.query(query, write=args.write)
        except readers.QueryError as e:
            raise CliError(str(e)) from e
    readers.write_result(res, args.format, args.output)
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------

def add_crawl_options(p: argparse.ArgumentParser, per: str) -> None:
    """The options that shape a crawl (shared by `add` and `schedule add`)."""
    p.add_argument("--depth", type=int, default=0, help="follow links this deep (default 0)")
    p.add_argument("--tag", action="append", help="tag every snapshot (repeatable)")
    p.add_argument("--plugins", help="only these plugins, comma-separated")
    p.add_argument("--allow", help="regex a discovered URL must match to be followed")
    p.add_argument("--deny", help="regex a discovered URL must not match")
    p.add_argument("--max-urls", type=int, help=f"at most this many snapshots per {per}")
    p.add_argument("--parser", help="force a seed format: txt, netscape, rss, atom, sitemap, "
                   "jsonl")
    p.add_argument("--concurrency", type=int, default=4, help="snapshots at once (default 4)")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help=f"config for this {per} (repeatable), e.g. WGET_TIMEOUT=30")
    p.add_argument("--allow-private", action="store_true",
                   help="allow loopback/private-network targets (URL_ALLOW_PRIVATE)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every command."""
    p = argparse.ArgumentParser(
        prog="archiveflow",
        description="Archive web pages with plugin hooks; index everything in DuckDB.")
    p.add_argument("--data-dir", help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[argparse.Namespace], int], helptext: str
                ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=helptext, description=helptext)
        sp.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
        sp.set_defaults(fn=fn)
        return sp

    a = command("add", cmd_add, "Archive URLs (args, a file, or - for stdin) as a new crawl.")
    a.add_argument("inputs", nargs="*", metavar="URL|FILE|-")
    add_crawl_options(a, per="crawl")

    r = command("resume", cmd_resume, "Finish every crawl that was interrupted.")
    r.add_argument("--concurrency", type=int, default=4)

    command("status", cmd_status, "Crawls, snapshots and results by status.")

    ls = command("list", cmd_list, "Snapshots with title and per-plugin status.")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--crawl", help="only this crawl id")
    ls.add_argument("--limit", type=int, default=100)

    q = command("sql", cmd_sql, "Run SQL on the index (read-only unless --write).")
    q.add_argument("query", nargs="?", help="SQL text, a .sql file, or - for stdin")
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("--output", help="write to this file (required for parquet)")
    q.add_argument("--write", action="store_true", help="allow statements that change data")
    for name in EXTENSIONS:
        importlib.import_module(name).register(command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `archiveflow` command."""
    from store.errors import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except CliError as e:
        _say(f"archiveflow: {e}")
        return e.code
    except StoreError as e:  # e.g. a query refused or failed
        _say(f"archiveflow: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("archiveflow: interrupted; run `archiveflow resume` to finish the crawl")
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    # `python -m flows.cli`: run the importable module's main, so that the CliError that
    # extension modules import is the one main() catches (not __main__'s copy).
    from flows.cli import main as _main

    sys.exit(_main())
