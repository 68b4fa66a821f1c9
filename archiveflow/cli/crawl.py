"""`add` and `resume`: run a crawl in this process with a live progress line.

`add --index-only` creates the crawl and its Snapshots (the seed parser's records, loaded in
batches with an "imported N URLs" line) without archiving them: no snapshot hook runs, no
Prefect server is needed, and the crawl is left queued. `resume` archives it later."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from archiveflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    CliError,
    Command,
    data_folder,
    open_index,
    print_table,
    say,
)
from archiveflow.tasks.scope import SCOPES

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


def _is_url_list(inputs: list[str]) -> bool:
    """True when the arguments are URLs (not `-`, one file, or one feed/sitemap URL)."""
    return not (inputs == ["-"] or (len(inputs) == 1 and (
        Path(inputs[0]).is_file() or _looks_like_seed_file(inputs[0]))))


def _read_seeds(inputs: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """Seed text from args, a file, or stdin; plus URL args refused with reasons."""
    from archiveflow.tasks.urls import check_url

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
            kept.append(url)  # what was checked is what is archived (`a b` -> `a%20b`)
    # As JSONL, so the seed parser takes each URL verbatim: its text rules cut a URL at
    # quotes (URLs in prose end there) and skip URLs without a host (file:///…) silently.
    return "\n".join(json.dumps({"url": u}) for u in kept), refused


# Refusals kept one by one (shown on stderr, stored in record_error); the rest are counted.
MAX_REFUSED_KEPT = 10_000
MAX_REFUSED_SHOWN = 1_000


# An http(s) URL on a public-looking name: the seed parser takes it whole and the crawl's
# ingest checks it (and names it if refused), so this pass need not (check_url is ~10 µs).
# Only RFC 3986 characters, and far below any length limit: anything else is checked here.
_PLAIN_URL = re.compile(r"https?://([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63})"
                        r"(?::\d{1,5})?(?:[/?#][A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]*)?")
_PLAIN_MAX: Final = 2048


def _plain_public_url(line: str) -> bool:
    m = _PLAIN_URL.fullmatch(line) if len(line) <= _PLAIN_MAX else None
    if m is None or m.group(1).lower().endswith("localhost"):
        return False
    return line[-1] not in ".,;:!?)]}'\">"  # the parser trims these: check_url names it


def _input_lines(inputs: list[str], text: str | None) -> Iterator[str]:
    """The lines of the one input file (streamed) or of the stdin text."""
    if text is not None:
        yield from text.splitlines()
        return
    with open(inputs[0], "rb") as f:
        for raw in f:
            yield raw.decode("utf-8", errors="replace")


def _refused_lines(inputs: list[str], text: str | None, *, allow_private: bool,
                   allow_file: bool) -> tuple[list[tuple[str, str]], int, int]:
    """Lines of a URL-per-line file (or stdin) that are no archivable URL, with reasons
    (the first MAX_REFUSED_KEPT), how many there are, and how many lines were looked at
    (0: not such an input). The file is read line by line, whatever its size.

    The seed parser picks URLs out of text and skips anything else silently; a line that is
    one token is meant as a URL, so the user is told why it is not taken. Markup and JSONL
    inputs are left to their parsers."""
    from archiveflow.tasks.urls import check_url

    if text is None:
        if len(inputs) != 1 or not Path(inputs[0]).is_file():
            return [], 0, 0
        with open(inputs[0], "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    else:
        head = text[:4096]
    if head.lstrip("\ufeff \t\r\n")[:1] in ("<", "{", "["):
        return [], 0, 0
    out: list[tuple[str, str]] = []
    count = looked = 0
    for line in _input_lines(inputs, text):
        raw = line.strip()
        if not raw or raw.startswith("#"):
            continue
        looked += 1
        reason: str | None = None
        if any(c in raw for c in " \t"):
            # Prose with URLs in it is the parser's to pick from; a line with none is said.
            if "://" not in raw:
                reason = "no URL in this line (expected one URL per line)"
        elif not _plain_public_url(raw):
            url, why = check_url(raw, allow_private=allow_private, allow_file=allow_file)
            if url is None:
                reason = why or "refused"
        if reason is not None:
            count += 1
            if len(out) < MAX_REFUSED_KEPT:
                out.append((raw, reason))
    return out, count, looked


class Refusals:
    """The inputs refused so far: said on stderr (the first MAX_REFUSED_SHOWN), each said
    once, and counted."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, str]] = []
        self.said: set[str] = set()
        self.count = 0

    def add(self, raw: str, reason: str, *, counted: bool = True) -> bool:
        """Say and keep a refusal unless it was said already; True if it was new."""
        if raw in self.said:
            return False
        if counted:
            self.count += 1
        if len(self.said) < MAX_REFUSED_KEPT:
            self.said.add(raw)
            self.kept.append((raw, reason))
        if len(self.kept) <= MAX_REFUSED_SHOWN and len(self.said) <= MAX_REFUSED_SHOWN:
            say(f"refused {raw!r}: {reason}")
        return True

    def summary(self, crawl_id: str | None) -> None:
        """One closing line when more were refused than shown."""
        if self.count > MAX_REFUSED_SHOWN:
            where = (f"; all are in record_error: archiveflow sql \"SELECT line, error FROM "
                     f"record_error WHERE owner_id = '{crawl_id}'\"" if crawl_id else "")
            say(f"refused {self.count:,} inputs in all (the first {MAX_REFUSED_SHOWN:,} "
                f"shown above){where}")


def _import_progress() -> Any:
    """A progress callback for batched imports: one stderr line per second at most, once
    the import is past its first batch (a crawl of a few URLs says nothing more)."""
    last = [0.0]

    def show(total: Any, final: bool = False) -> None:
        now = time.monotonic()
        done = total.counts.get("Snapshot", 0) + total.refused_count
        if done < 10_000 or (not final and now - last[0] < 1.0):
            return
        last[0] = now
        say(f"imported {total.counts.get('Snapshot', 0):,} URLs "
            f"({total.refused_count:,} refused)" + ("" if final else " …"))

    return show


class Progress:
    """A live line of snapshot and result counts for one crawl, from the index."""

    def __init__(self, rt: Any, crawl_id: str, interval: float = 0.5) -> None:
        self.rt, self.crawl_id, self.interval = rt, crawl_id, interval
        self._stop = threading.Event()
        self._tty = sys.stderr.isatty()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.monotonic()

    def line(self) -> str:
        from archiveflow.store import results, snapshots

        cur = self.rt.store.cursor()
        s = snapshots.counts(cur, self.crawl_id)
        r = results.result_counts(cur, self.crawl_id)
        total = sum(s.values())
        res = " ".join(f"{k} {v}" for k, v in sorted(r.items()))
        return (f"[{time.monotonic() - self.started:6.1f}s] snapshots {s.get('sealed', 0)}/"
                f"{total} done, {s.get('started', 0)} in progress, {s.get('queued', 0)} queued"
                f" | results: {res or '-'}")

    def _loop(self) -> None:
        last = time.monotonic()  # a log's first line after 5 s too (not while hooks start)
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
                say(text)
                last = time.monotonic()

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._tty:
            print("\r" + " " * 160 + "\r", end="", file=sys.stderr, flush=True)


def run_crawl(rt: Any, crawl_id: str, concurrency: int, prefect_ready: Any = None,
              gate: threading.Event | None = None) -> dict[str, Any]:
    """Run a crawl in this process with a live progress line.

    Prefect is kept off the critical path of the first hook: its server is reused or
    started at once, and its engine imported, in a background thread (`prefect_ready`,
    started by the caller as early as it can, with `gate`) while this thread claims the
    crawl, runs the on_Crawl hooks (seed parsing) and starts the first snapshots' hooks;
    the crawl flow then takes over from there. The engine's import (1-2 s of CPU) waits
    for `gate`, opened as the first on_Snapshot hook starts (flows/head_start.py): with
    one GIL, importing it meanwhile slowed this thread down by as much.
    """
    from archiveflow.flows.prefect_server import start_in_background
    from archiveflow.tasks import crawls

    # The live progress line is the display; Prefect's per-run INFO lines would bury it.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if prefect_ready is None:
        gate = threading.Event()
        prefect_ready = start_in_background(rt.data_dir, report=say, gate=gate)
    current = None
    try:
        with Progress(rt, crawl_id):
            start = crawls.run(rt, crawls.claim(rt, crawl_id), progress=_import_progress())
            # (imported while the on_Crawl hooks ran: tasks/crawls.CRAWL_MODULES)
            from archiveflow.flows import context, head_start

            current = context.install(rt)
            current.crawl_starts[crawl_id] = start
            head_start.run_until_ready(current, start, concurrency, prefect_ready, gate)
            if gate is not None:
                gate.set()  # (run_until_ready has opened it already)
            prefect_ready.result()
            from archiveflow.flows.crawl import run_crawl_flow

            return asyncio.run(run_crawl_flow(crawl_id, concurrency=concurrency, started=True))
    finally:
        if current is not None:
            from archiveflow.flows import context

            context.uninstall()


def summarize(rt: Any, crawl_id: str) -> None:
    """Per-plugin result counts of a crawl, and where its files are."""
    from archiveflow.store import crawls, snapshots

    cur = rt.store.cursor()
    rows = crawls.plugin_summary(cur, crawl_id)
    print(f"crawl {crawl_id}: {sum(snapshots.counts(cur, crawl_id).values())} snapshots")
    print_table(["plugin", "succeeded", "noresults", "skipped", "failed", "a failure"], rows)
    print(f"files: {rt.data_dir}/users/  index: {rt.data_dir}/index.duckdb")


def _exit_code(result: dict[str, Any], refused: list[tuple[str, str]]) -> int:
    """README's exit codes of a crawl: 2 when the input held no archivable URL, 1 when the
    crawl could not run or archived nothing (every ArchiveResult failed: its flow run is
    Failed then too), 3 when archived but some inputs were refused, else 0."""
    from archiveflow.flows.crawl import archived_nothing

    # "snapshots" counts this process's; on the shared index workers may have run them all
    if result["snapshots"] == 0 and not result["results"]:
        if result["failures"]:
            return EXIT_FAILED  # the crawl could not run (its errors are printed above)
        say("no URL was archived: the input held no archivable URL")
        return EXIT_USAGE
    if archived_nothing(result):
        say("nothing was archived: every result failed (see the table above)")
        return EXIT_FAILED
    return EXIT_PARTIAL if refused or result["refused"] else EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from archiveflow.store import crawls
    from archiveflow.tasks import crawls as crawl_work
    from archiveflow.tasks.urls import check_url

    if not args.inputs:
        raise CliError("nothing to add: give URLs, a file, or - for stdin", EXIT_USAGE)
    seeds, refused_args = _read_seeds(args.inputs)
    refused = Refusals()
    for raw, reason in refused_args:
        refused.add(raw, reason)
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
    if args.scope:
        config["CRAWL_SCOPE"] = args.scope
    prefect_ready = None
    gate = threading.Event()
    if not args.index_only:
        # Reuse-or-start the Prefect server now, and import its engine once the first hooks
        # run (`gate`): Prefect stays off the path to the first on_Snapshot hook.
        from archiveflow.flows.prefect_server import start_in_background

        prefect_ready = start_in_background(data_folder(args).resolve(), report=say,
                                            gate=gate)
    rt = open_index(args)
    try:
        ctx = crawl_work.url_policy(rt, {"config": config})
        bad_lines, bad_count, looked = _refused_lines(
            args.inputs, seeds if args.inputs == ["-"] else None,
            allow_private=ctx.allow_private, allow_file=ctx.allow_file)
        refused.count += bad_count  # every refused line counts, the same line twice too
        for raw, reason in bad_lines:
            refused.add(raw, reason, counted=False)
        if _is_url_list(args.inputs):
            # URL arguments meet the crawl's own policy here, named as the user wrote them
            # (the crawl would see only the normalised form: 0x7f000001 -> 127.0.0.1).
            kept = []
            for raw in args.inputs:
                url, why = check_url(raw, allow_private=ctx.allow_private,
                                     allow_file=ctx.allow_file)
                if url is None:
                    refused.add(raw, why or "refused")
                else:
                    kept.append(url)
            if not kept:
                raise CliError("no valid URL to archive (see the reasons above)", EXIT_USAGE)
            seeds = "\n".join(json.dumps({"url": u}) for u in kept)
        if looked and bad_count == looked:
            raise CliError(f"no valid URL to archive: all {looked} line(s) were refused "
                           "(reasons above)", EXIT_USAGE)
        crawl_work.expire_stale(rt)
        tags = list({t.strip().lower(): t.strip() for t in reversed(args.tag or [])
                     if t.strip()}.values())[::-1]  # one per name whatever the case, first wins
        crawl = crawls.create_crawl(
            rt.store.cursor(), seeds=seeds, max_depth=args.depth, tags=",".join(tags),
            plugins=args.plugins, url_allow=args.allow, url_deny=args.deny,
            max_urls=args.max_urls, parser=args.parser, config=config,
            machine_id=rt.machine.id)
        say(f"crawl {crawl['id']} queued: depth {args.depth}, data folder {rt.data_dir}")
        _store_refusals(rt, crawl["id"], refused)
        if args.index_only:
            return _index_only(rt, crawl, refused)
        result = run_crawl(rt, crawl["id"], args.concurrency, prefect_ready, gate)
        for url, reason in result["refused"]:
            refused.add(url, reason, counted=False)  # counted by the crawl
        refused.summary(crawl["id"])
        for failure in result["failures"]:
            say(f"error: {failure.splitlines()[0] if failure else 'failed'}")
        summarize(rt, crawl["id"])
        return _exit_code(result, refused.kept)
    finally:
        rt.close()


def _store_refusals(rt: Any, crawl_id: str, refused: Refusals) -> None:
    """The inputs `add` refused before the crawl ran, queryable beside the crawl's own
    (record_error rows owned by the crawl, hook_name `add`)."""
    rows = [{"owner_id": crawl_id, "hook_name": "add", "line": raw[:2000], "error": reason}
            for raw, reason in refused.kept]
    if refused.count > len(refused.kept):
        rows.append({"owner_id": crawl_id, "hook_name": "add",
                     "line": f"[{refused.count - len(refused.kept)} more refused lines]",
                     "error": "not stored one by one"})
    if rows:
        from archiveflow.store import results

        with rt.store.transaction() as cur:
            results.add_record_errors(cur, rows)


def _index_only(rt: Any, crawl: dict[str, Any], refused: Refusals) -> int:
    """`add --index-only`: run the input parser, load its Snapshots in batches, leave the
    crawl queued for `resume`. Exit 0, or 3 when some input was refused, 2 when none was
    archivable, 1 when the parser failed."""
    from archiveflow.store import snapshots
    from archiveflow.tasks import crawls as crawl_work

    show = _import_progress()
    start = crawl_work.run(rt, crawl_work.claim(rt, crawl["id"]), input_only=True,
                           progress=show)
    crawl_work.requeue(rt, start.crawl)
    # The parser's URLs that the crawl refused and `add` had not refused already (a line
    # refused before the import is not counted twice); past the ones kept, all are new.
    for url, reason in start.refused:
        refused.add(url, reason)
    refused.count += start.refused_count - len(start.refused)
    refused.summary(crawl["id"])
    for failure in start.failures:
        say(f"error: {failure.splitlines()[0] if failure else 'failed'}")
    total = snapshots.count_in_crawl(rt.store.cursor(), crawl["id"])
    all_refused = refused.count
    say(f"indexed {total:,} snapshots in crawl {crawl['id']} ({all_refused:,} inputs "
        f"refused, {start.invalid:,} invalid records); not archived yet: "
        "`archiveflow resume` archives them")
    print(f"crawl {crawl['id']}: {total} snapshots queued, {all_refused} refused")
    if start.failures:
        return EXIT_FAILED
    if total == 0:
        return EXIT_USAGE
    return EXIT_PARTIAL if all_refused else EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from archiveflow.store import crawls
    from archiveflow.tasks import crawls as crawl_work

    rt = open_index(args)
    try:
        released = crawl_work.expire_stale(rt)
        todo = crawls.unfinished_crawls(rt.store.cursor())
        if not todo:
            say("nothing to resume: every crawl is sealed")
            return EXIT_OK
        say(f"resuming {len(todo)} crawl(s); {released} interrupted row(s) released")
        codes = []
        for crawl in todo:
            result = run_crawl(rt, crawl["id"], args.concurrency)
            summarize(rt, crawl["id"])
            codes.append(_exit_code(result, []))
        return next((c for c in (EXIT_FAILED, EXIT_PARTIAL) if c in codes), EXIT_OK)
    finally:
        rt.close()



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
    p.add_argument("--scope", choices=SCOPES,
                   help="which discovered links to follow: page (none), prefix (under a "
                   "seed's folder), host (a seed's host; the default, CRAWL_SCOPE), domain "
                   "(and its subdomains), any")




def register(command: Command) -> None:
    """Add `add` and `resume`."""
    a = command("add", cmd_add, "Archive URLs (args, a file, or - for stdin) as a new crawl.")
    a.add_argument("inputs", nargs="*", metavar="URL|FILE|-")
    add_crawl_options(a, per="crawl")
    a.add_argument("--index-only", action="store_true",
                   help="only create the crawl's snapshots (import in batches); archive "
                   "them later with `archiveflow resume`")

    r = command("resume", cmd_resume, "Finish every crawl that was interrupted, and archive "
                "the crawls `add --index-only` left queued.")
    r.add_argument("--concurrency", type=int, default=4)
