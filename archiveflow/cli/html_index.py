"""A static HTML index of the archive that opens from the file system, with no server.

`index.html` lists every Snapshot (its screenshot as a thumbnail, title, URL, date, tags, the
browser outputs — PDF, DOM, single file — and its crawl's WACZ, each plugin's output); one
page per Snapshot (`snapshots/<id>.html`) shows the screenshot and lists its results and every
file they left. All links are relative paths to files that exist when the index is written;
the original URL is shown as text, never as a link, so opening the index never touches the
network. No script, no external style sheet.
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from archiveflow.store.queries import IndexPages

STYLE: Final[str] = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .5em; border-bottom: 1px solid #ddd;
         vertical-align: top; }
th { background: #f4f4f4; } code { font-size: .9em; color: #555; word-break: break-all; }
.succeeded { color: #1a7f37; } .failed { color: #cf222e; } .skipped, .noresults { color: #777; }
.tag { background: #eef; border-radius: 3px; padding: 0 .3em; margin-right: .2em; }
.status { white-space: nowrap; } .status a { color: inherit; }
.small { font-size: .85em; color: #666; }
img.thumb { width: 160px; height: 112px; object-fit: cover; object-position: top;
            border: 1px solid #ddd; } img.shot { max-width: 100%; border: 1px solid #ddd; }
.views a { margin-right: .5em; white-space: nowrap; }
"""
# The browser outputs linked by name: plugin -> label (the file is the result's output_str).
VIEWS: Final[tuple[tuple[str, str], ...]] = (
    ("pdf", "PDF"), ("dom", "DOM"), ("singlefile", "single file"))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _date(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else _e(value)


def _size(n: int | None) -> str:
    if not n:
        return "0 B"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


class _Links:
    """Relative hrefs from one page's folder to files of the archive, if they exist."""

    def __init__(self, data_dir: Path, page_dir: Path) -> None:
        self.data_dir, self.page_dir = data_dir, page_dir

    def href(self, snapshot_dir: str, rel_path: str) -> str | None:
        target = self.data_dir / snapshot_dir / rel_path
        if not rel_path or ".." in Path(rel_path).parts or not target.is_file():
            return None
        return quote(os.path.relpath(target, self.page_dir).replace(os.sep, "/"))

    def a(self, snapshot_dir: str, rel_path: str, text: str) -> str:
        href = self.href(snapshot_dir, rel_path)
        return f'<a href="{href}">{_e(text)}</a>' if href else _e(text)


def _result_cell(links: _Links, snap: dict[str, Any], res: dict[str, Any]) -> str:
    status = res["status"]
    href = links.href(snap["output_dir"], res["output_str"] or "")
    label = f"{res['plugin']}"
    inner = f'<a href="{href}">{_e(label)}</a>' if href else _e(label)
    return f'<span class="status {_e(status)}" title="{_e(status)}">{inner}</span>'


def _output_href(links: _Links, snap: dict[str, Any], results: Sequence[dict[str, Any]],
                 plugin: str) -> str | None:
    """The href of a plugin's main output for this snapshot, if it succeeded and exists."""
    for r in results:
        if r["plugin"] == plugin and r["status"] == "succeeded":
            return links.href(snap["output_dir"], r["output_str"] or "")
    return None


def _views(links: _Links, snap: dict[str, Any], results: Sequence[dict[str, Any]],
           wacz: str | None) -> str:
    out = [f'<a href="{href}">{_e(label)}</a>' for plugin, label in VIEWS
           if (href := _output_href(links, snap, results, plugin))]
    if wacz:
        out.append(f'<a href="{wacz}" title="the crawl\'s web archive, for ReplayWeb.page or '
                   f'pywb">WACZ</a>')
    return f'<span class="views">{" ".join(out)}</span>' if out else ""


def _thumb(links: _Links, snap: dict[str, Any], results: Sequence[dict[str, Any]],
           css: str = "thumb") -> str:
    href = _output_href(links, snap, results, "screenshot")
    if not href:
        return ""
    return (f'<a href="{href}"><img class="{css}" src="{href}" alt="screenshot of '
            f'{_e(snap["url"])}" loading="lazy"></a>')


def _index_page(snaps: Sequence[dict[str, Any]], results: dict[str, list[dict[str, Any]]],
                links: _Links, waczs: dict[str, str]) -> str:
    rows = []
    for s in snaps:
        tags = "".join(f'<span class="tag">{_e(t.strip())}</span>'
                       for t in (s["tags"] or "").split(",") if t.strip())
        mine = results.get(s["id"], [])
        outputs = " ".join(_result_cell(links, s, r) for r in mine)
        views = _views(links, s, mine, waczs.get(s.get("crawl_id") or ""))
        rows.append(
            f"<tr><td>{_thumb(links, s, mine)}</td>"
            f'<td><a href="snapshots/{_e(s["id"])}.html">{_e(s["title"] or s["url"])}</a>'
            f'<br><code>{_e(s["url"])}</code>{"<br>" + views if views else ""}</td>'
            f'<td class="small">{_date(s["created_at"])}</td><td>{tags}</td>'
            f"<td>{outputs}</td></tr>")
    body = (
        f"<h1>archiveflow: {len(snaps)} snapshots</h1>\n"
        '<p class="small">Green: succeeded; red: failed; grey: skipped or no results. '
        "Each plugin name links to its main output.</p>\n"
        "<table>\n<thead><tr><th>screenshot</th><th>snapshot</th><th>captured</th>"
        "<th>tags</th><th>outputs</th></tr></thead>\n<tbody>\n" + "\n".join(rows)
        + "\n</tbody>\n</table>")
    return _page("archiveflow index", body)


def _snapshot_page(snap: dict[str, Any], results: Sequence[dict[str, Any]],
                   files: dict[str, list[dict[str, Any]]], links: _Links,
                   wacz: str | None = None) -> str:
    rows = []
    for r in results:
        main = links.a(snap["output_dir"], r["output_str"] or "", r["output_str"] or "")
        file_links = "<br>".join(
            f'{links.a(snap["output_dir"], f["path"], f["path"])} '
            f'<span class="small">{_size(f["size"])}</span>'
            for f in files.get(r["id"], []))
        rows.append(
            f'<tr><td>{_e(r["plugin"])}</td><td class="status {_e(r["status"])}">'
            f'{_e(r["status"])}</td><td>{main}<br><span class="small">{_e(r["error"])}</span>'
            f"</td><td>{file_links}</td></tr>")
    tags = ", ".join(t.strip() for t in (snap["tags"] or "").split(",") if t.strip())
    body = (
        '<p><a href="../index.html">&larr; all snapshots</a></p>\n'
        f'<h1>{_e(snap["title"] or snap["url"])}</h1>\n'
        f'<p><code>{_e(snap["url"])}</code><br>captured {_date(snap["created_at"])}, '
        f'depth {_e(snap["depth"])}, {_e(snap["status"])}'
        f'{", tags: " + _e(tags) if tags else ""}</p>\n'
        f"<p>{_views(links, snap, results, wacz)}</p>\n"
        f"<p>{_thumb(links, snap, results, 'shot')}</p>\n"
        "<table>\n<thead><tr><th>plugin</th><th>status</th><th>output</th><th>files</th>"
        "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")
    return _page(snap["title"] or snap["url"], body)


def write_html_index(pages: IndexPages, data_dir: Path, out_dir: Path,
                     waczs: dict[str, Path] | None = None) -> Path:
    """Write index.html and snapshots/<id>.html under `out_dir`; returns index.html.
    `pages`: the rows, from store.queries.index_pages; `waczs`: crawl id -> its WACZ file,
    linked from each of the crawl's snapshots."""
    data_dir, out_dir = data_dir.resolve(), out_dir.resolve()
    snaps = pages.snapshots
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in pages.results:
        results[r["snapshot_id"]].append(r)
    files: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in pages.files:
        files[f["archiveresult_id"]].append(f)
    snapshot_dir = out_dir / "snapshots"
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    page_links = _Links(data_dir, snapshot_dir)

    def rel(page_dir: Path) -> dict[str, str]:
        return {c: quote(os.path.relpath(p.resolve(), page_dir).replace(os.sep, "/"))
                for c, p in (waczs or {}).items() if p.is_file()}

    page_waczs = rel(snapshot_dir)
    for s in snaps:
        text = _snapshot_page(s, results.get(s["id"], []), files, page_links,
                              page_waczs.get(s.get("crawl_id") or ""))
        (snapshot_dir / f"{s['id']}.html").write_text(text, encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(_index_page(snaps, results, _Links(data_dir, out_dir), rel(out_dir)),
                     encoding="utf-8")
    return index
