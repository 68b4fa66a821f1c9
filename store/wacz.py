"""Export snapshots as one WACZ file, which ReplayWeb.page and pywb open and replay.

Built from the WARCs the snapshots' hooks wrote (wget's `warc/*.warc.gz`) with Webrecorder's
own packager (`wacz` on PyPI): `archive/` holds the WARCs, `indexes/` the CDXJ index of
every record, `pages/pages.jsonl` one line per snapshot, `datapackage.json` the hashes.

pages.jsonl is written here rather than detected by `wacz`: its detection extracts text with
an article extractor that keeps nothing of short pages, and ReplayWeb.page's full-text search
reads only that `text` field. Each page's line carries the snapshot's URL, its title, the
capture time of the page's own WARC record (the replay looks it up by URL and time) and the
page's visible text, taken from that record.

WARCs keep their file names in the WACZ (`archive/<name>`); wget names them by the second it
started, so two snapshots can share one. They are linked under `<snapshot id>-<n>.warc.gz`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final

TEXT_LIMIT: Final[int] = 200_000  # characters of a page's text kept for search
_HTML: Final = re.compile(r"text/html|application/xhtml", re.IGNORECASE)
_SKIP_TAGS: Final[frozenset[str]] = frozenset({"script", "style", "noscript", "template",
                                               "svg", "head"})


class WaczError(RuntimeError):
    """The WACZ could not be written: nothing to put in it, or the packager failed."""


@dataclass
class WaczReport:
    """What went into the WACZ."""

    path: Path
    pages: int
    warcs: int
    size: int
    without_warc: list[str] = field(default_factory=list)  # snapshot URLs with no WARC


@dataclass
class _Page:
    id: str
    url: str
    title: str | None
    created_at: Any
    warcs: list[Path] = field(default_factory=list)


class _Text(HTMLParser):
    """The visible text and the <title> of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP_TAGS and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def page_text(html: str) -> tuple[str, str | None]:
    """(visible text with whitespace collapsed, <title>) of an HTML document."""
    parser = _Text()
    with contextlib.suppress(AssertionError):  # HTMLParser on hopeless markup
        parser.feed(html)
        parser.close()
    title = " ".join("".join(parser.title).split()) or None
    return " ".join(" ".join(parser.parts).split())[:TEXT_LIMIT], title


def _decode(body: bytes, content_type: str) -> str:
    m = re.search(r"charset=([\w.:-]+)", content_type) or re.search(
        rb"""<meta[^>]+charset=["']?([\w.:-]+)""", body[:4096], re.IGNORECASE)
    charset = m.group(1) if m else "utf-8"
    if isinstance(charset, bytes):
        charset = charset.decode("ascii", "ignore")
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _capture(page: _Page) -> tuple[str | None, str, str | None]:
    """(ISO capture time, text, title) of the page's own response in its WARCs: the record
    for its URL (its time), and the first HTML page it led to (the target of a redirect)."""
    from warcio.archiveiterator import ArchiveIterator

    ts: str | None = None
    first: str | None = None  # the time of the first response, if none is for the URL itself
    for warc in page.warcs:
        with open(warc, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "response":
                    continue
                when = record.rec_headers.get_header("WARC-Date")
                first = first or when
                if ts is None and record.rec_headers.get_header("WARC-Target-URI") == page.url:
                    ts = when
                headers = record.http_headers
                ctype = headers.get_header("Content-Type", "") if headers else ""
                status = headers.get_statuscode() if headers else ""
                if _HTML.search(ctype) and not status.startswith("3"):
                    body = record.content_stream().read(20 * 1024 * 1024)
                    text, title = page_text(_decode(body, ctype))
                    return ts or when, text, title
    return ts or first, "", None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _pages(rows: list[dict[str, Any]], data_dir: Path) -> tuple[list[_Page], list[str]]:
    pages: dict[str, _Page] = {}
    root = data_dir.resolve()
    for row in rows:
        page = pages.setdefault(row["id"], _Page(row["id"], row["url"], row["title"],
                                                 row["created_at"]))
        if row.get("warc"):
            path = (root / row["output_dir"] / row["warc"]).resolve()
            # Paths come from plugin output: only files inside the data folder go in.
            if path.is_relative_to(root) and path.is_file():
                page.warcs.append(path)
    with_warc = [p for p in pages.values() if p.warcs]
    return with_warc, [p.url for p in pages.values() if not p.warcs]


def write_wacz(rows: list[dict[str, Any]], data_dir: Path, out: Path,
               title: str = "archiveflow") -> WaczReport:
    """Write the WACZ of `rows` (store.queries.snapshot_warcs) to `out`; returns what is in it.

    Raises WaczError when no snapshot has a WARC, or when the packager fails."""
    from wacz.main import main as wacz_main

    pages, without = _pages(rows, data_dir)
    if not pages:
        raise WaczError("no WARC to export: none of the selected snapshots has one "
                        "(the wget plugin writes them)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wacz-", dir=out.parent) as tmp:
        inputs: list[str] = []
        lines = [json.dumps({"format": "json-pages-1.0", "id": "pages", "title": title,
                             "hasText": True})]
        for page in pages:
            for n, warc in enumerate(page.warcs):
                link = Path(tmp) / f"{page.id}-{n}.warc.gz"
                link.symlink_to(warc)
                inputs.append(str(link))
            ts, text, html_title = _capture(page)
            lines.append(json.dumps({
                "id": page.id, "url": page.url, "ts": ts or _iso(page.created_at),
                "title": page.title or html_title or page.url, "text": text}))
        pages_file = Path(tmp) / "pages.jsonl"
        pages_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial = Path(tmp) / "out.wacz"
        chatter = io.StringIO()  # the packager prints progress lines meant for its own CLI
        with contextlib.redirect_stdout(chatter):
            rc = wacz_main(["create", "-o", str(partial), "--pages", str(pages_file),
                            "--copy-pages", "--hash-type", "sha256", "--title", title,
                            *inputs])
        if rc not in (0, None) or not partial.is_file():
            raise WaczError(f"wacz create exited {rc}: {chatter.getvalue()[-500:]}")
        os.replace(partial, out)  # all or nothing: no half-written WACZ under the name
    warcs = sum(len(p.warcs) for p in pages)
    return WaczReport(out, len(pages), warcs, out.stat().st_size, without)
