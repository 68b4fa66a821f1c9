"""Export to json/csv/parquet round-trips; the static HTML index renders with no server."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.flows.conftest import run_cli

VOID = {"meta", "link", "br", "img", "hr", "input", "col", "area", "base", "wbr", "source"}


@pytest.fixture(scope="module")
def exported(archive: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    for fmt in ("json", "csv", "parquet"):
        proc = run_cli(archive["data"], "export", "--format", fmt, "--output", str(out / fmt))
        assert proc.returncode == 0, proc.stderr
    return {fmt: out / fmt for fmt in ("json", "csv", "parquet")}


def _table(archive: dict[str, Any], sql: str) -> Any:
    con = duckdb.connect(str(archive["data"] / "index.duckdb"), read_only=True)
    try:
        return con.execute(sql).to_arrow_table()
    finally:
        con.close()


def test_parquet_reads_back_equal_to_the_tables(archive: dict[str, Any],
                                                exported: dict[str, Path]) -> None:
    results = pq.read_table(exported["parquet"] / "results.parquet")
    assert results.equals(_table(archive, "SELECT * FROM archiveresult "
                                          "ORDER BY snapshot_id, hook_name"))
    snaps = pq.read_table(exported["parquet"] / "snapshots.parquet")
    want = _table(archive, "SELECT * FROM snapshot ORDER BY created_at, id")
    assert snaps.drop_columns(["tags"]).equals(want)
    tags = {r["id"]: r["tags"] for r in snaps.select(["id", "tags"]).to_pylist()}
    link = _table(archive, "SELECT snapshot_id, tag FROM snapshot_tag").to_pylist()
    assert sum(len(t) for t in tags.values()) == len(link)
    files = pq.read_table(exported["parquet"] / "output_files.parquet")
    assert files.num_rows == _table(archive, "SELECT count(*) AS n FROM output_file"
                                    ).column("n")[0].as_py()


def test_json_and_csv_hold_the_same_rows(archive: dict[str, Any],
                                         exported: dict[str, Path]) -> None:
    want = _table(archive, "SELECT id, url, title FROM snapshot ORDER BY created_at, id"
                  ).to_pylist()
    lines = (exported["json"] / "snapshots.jsonl").read_text(encoding="utf-8").splitlines()
    got = [json.loads(line) for line in lines]
    assert [{k: g[k] for k in ("id", "url", "title")} for g in got] == want
    assert all(isinstance(g["tags"], list) for g in got)
    with open(exported["csv"] / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ids = _table(archive, "SELECT id FROM archiveresult ORDER BY snapshot_id, hook_name")
    assert [r["id"] for r in rows] == ids.column("id").to_pylist()


def test_csv_export_neutralises_formulas(archive: dict[str, Any], tmp_path: Path) -> None:
    """Titles and errors come from strangers' pages and plugin output: in CSV, a cell that a
    spreadsheet would run as a formula starts with an apostrophe; JSON keeps the text."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(archive["data"] / "index.duckdb", data / "index.duckdb")
    con = duckdb.connect(str(data / "index.duckdb"))
    try:
        sid = con.execute("SELECT id FROM snapshot ORDER BY created_at, id LIMIT 1").fetchone()
        assert sid
        con.execute("UPDATE snapshot SET title = '=HYPERLINK(\"http://evil\",\"x\")' "
                    "WHERE id = ?", [sid[0]])
        con.execute("UPDATE archiveresult SET error = '@SUM(1+1)' WHERE snapshot_id = ?",
                    [sid[0]])
    finally:
        con.close()
    for fmt in ("csv", "json"):
        proc = run_cli(data, "export", "--format", fmt, "--output", str(tmp_path / fmt))
        assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "csv" / "snapshots.csv", newline="", encoding="utf-8") as f:
        snaps = {r["id"]: r for r in csv.DictReader(f)}
    assert snaps[sid[0]]["title"] == "'=HYPERLINK(\"http://evil\",\"x\")"
    assert all(not r["title"].startswith(("=", "+", "-", "@")) for r in snaps.values())
    with open(tmp_path / "csv" / "results.csv", newline="", encoding="utf-8") as f:
        errors = {r["error"] for r in csv.DictReader(f) if r["snapshot_id"] == sid[0]}
    assert errors == {"'@SUM(1+1)"}
    lines = (tmp_path / "json" / "snapshots.jsonl").read_text(encoding="utf-8").splitlines()
    titles = {json.loads(line)["title"] for line in lines}
    assert '=HYPERLINK("http://evil","x")' in titles


class _Checker(HTMLParser):
    """Tags balanced (void elements aside), and every href collected."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.hrefs: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs.extend(v for k, v in attrs if k in ("href", "src") and v is not None)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def _check_page(page: Path) -> list[Path]:
    checker = _Checker()
    checker.feed(page.read_text(encoding="utf-8"))
    checker.close()
    assert checker.doctype, page
    assert not checker.errors and not checker.stack, (page, checker.errors, checker.stack)
    targets = []
    for href in checker.hrefs:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.netloc, f"{page}: non-relative link {href}"
        target = (page.parent / unquote(parts.path)).resolve()
        assert target.is_file(), f"{page}: {href} does not resolve"
        targets.append(target)
    return targets


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _screenshot(url: str, png: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,900",
         f"--screenshot={png}", url],
        capture_output=True, text=True, timeout=120)


def test_static_html_index_links_resolve_and_render(archive: dict[str, Any],
                                                    tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(archive["data"], data, ignore=shutil.ignore_patterns("prefect"))
    proc = run_cli(data, "index-html")  # default: <data>/html
    assert proc.returncode == 0, proc.stderr
    # Moved as a whole, the archive and its index still work: every link is relative.
    moved = tmp_path / "moved"
    data.rename(moved)
    index = moved / "html" / "index.html"
    pages = _check_page(index)
    snapshot_pages = sorted(p for p in pages if p.parent.name == "snapshots")
    assert len(snapshot_pages) == 7
    files = [t for p in snapshot_pages for t in _check_page(p)]
    outputs = [f for f in files if f.is_relative_to(moved / "users")]
    assert any(f.name == "htmltotext.txt" for f in outputs)
    assert any(f.suffix == ".html" and "wget" in f.parts for f in outputs)
    text = index.read_text(encoding="utf-8")
    assert "Page Two" in text and "analytics" in text and "second" in text
    # export --format html writes the same pages anywhere else
    proc = run_cli(moved, "export", "--format", "html", "--output", str(tmp_path / "site"))
    assert proc.returncode == 0, proc.stderr
    other = _check_page(tmp_path / "site" / "index.html")
    assert sum(1 for p in other if p.parent.name == "snapshots") == 7
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("chromium is not installed (make system-deps)")
    png = tmp_path / "index.png"
    shot = _screenshot(index.as_uri(), png, tmp_path / "chromium-profile")
    assert png.is_file(), shot.stderr[-2000:]
    assert _png_size(png) == (1200, 900)
    # A blank page compresses to a few KB; a table of snapshots does not.
    assert png.stat().st_size > 20_000, png.stat().st_size
    page_png = tmp_path / "snapshot.png"
    _screenshot(snapshot_pages[0].as_uri(), page_png, tmp_path / "chromium-profile")
    assert page_png.stat().st_size > 10_000
    shutil.copy(png, Path(tempfile.gettempdir()) / "archiveflow-index.png")


# --- WACZ -----------------------------------------------------------------------------------

def _wacz_member(wacz: Path, name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(wacz) as z:
        return z.read(name)


def _replay(wacz: Path, url: str) -> tuple[str, bytes]:
    """What a replay system serves for `url`: its CDXJ line in indexes/index.cdx.gz names the
    WARC in archive/ and the record's offset and length; the record's HTTP payload."""
    import gzip
    import zipfile

    from warcio.archiveiterator import ArchiveIterator

    lines = gzip.decompress(_wacz_member(wacz, "indexes/index.cdx.gz")).decode().splitlines()
    hits = [json.loads(line.split(" ", 2)[2]) for line in lines]
    hit = next(h for h in hits if h["url"] == url and h.get("mime") != "warc/revisit"
               and str(h.get("status")) == "200")
    with zipfile.ZipFile(wacz) as z:
        raw = z.read(f"archive/{hit['filename']}")
    chunk = raw[int(hit["offset"]):int(hit["offset"]) + int(hit["length"])]
    record = next(iter(ArchiveIterator(io.BytesIO(chunk))))
    return hit["mime"], record.content_stream().read()


def test_wacz_of_a_selection_validates_and_replays_the_live_page(
        archive: dict[str, Any], tmp_path: Path) -> None:
    import sys
    import urllib.request

    out = tmp_path / "analytics.wacz"
    proc = run_cli(archive["data"], "export", "--format", "wacz", "--tag", "analytics",
                   "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    tagged = _table(archive, "SELECT count(*) AS n FROM snapshot_tag WHERE tag = 'analytics'"
                    ).column("n")[0].as_py()
    assert f"{tagged} pages" in proc.stdout, proc.stdout  # wget left a WARC for every one
    check = subprocess.run([sys.executable, "-m", "wacz", "validate", "-f", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "is valid" in check.stdout, check.stdout + check.stderr

    lines = _wacz_member(out, "pages/pages.jsonl").decode().splitlines()
    header, pages = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header["format"] == "json-pages-1.0" and header["hasText"] is True
    by_url = {p["url"].removeprefix(archive["site"]): p for p in pages}
    assert by_url["/page2.html"]["title"] == "Page Two"
    # ReplayWeb.page's full-text search reads `text`: the page's words, not its markup.
    assert "zebra" in by_url["/page2.html"]["text"] and "<" not in by_url["/page2.html"]["text"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p["ts"]) for p in pages)

    url = f"{archive['site']}/page1.html"
    mime, body = _replay(out, url)
    with urllib.request.urlopen(url, timeout=10) as live:
        assert mime == "text/html" and body == live.read()
