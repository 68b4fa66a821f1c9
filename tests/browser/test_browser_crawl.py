"""A crawl through the installed `archiveflow` command with the browser plugins (`crawled`):
one Chromium for the whole crawl (plugins/chrome), stopped at crawl cleanup with nothing of it
left; then its static HTML index, opened in headless Chromium (over a pipe, no debugging
port): the thumbnails show, the PDF/DOM/single file/WACZ links resolve and open."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.browser.conftest import cli, procs_using
from tests.browser.pipe_browser import PipeBrowser

BROWSER_PLUGINS = ("screenshot", "pdf", "dom", "singlefile")


def test_a_crawl_shares_one_browser_and_leaves_nothing(crawled: dict[str, Any]) -> None:
    rows, data = crawled["rows"], crawled["data"]
    browser_rows = [r for r in rows if r[1] in BROWSER_PLUGINS]
    assert len({r[0] for r in rows}) >= 2, rows
    assert browser_rows and all(r[2] == "succeeded" for r in browser_rows), browser_rows
    own = [r for r in browser_rows if '"browser": "crawl"' not in r[4]]
    assert not own, f"not in the crawl's browser: {own}"
    titles = {r[0]: r[3] for r in rows if r[1] == "title"}
    assert titles[f"{crawled['site']}/page1.html"] == "Page One"
    for url, _plugin, _status, output, _json, snap_dir in browser_rows:
        assert (data / snap_dir / output).is_file(), (url, output)

    log = crawled["crawl_dir"] / "chrome" / "on_Crawl__05_chrome.daemon.bg.stderr.log"
    served = re.search(r"serving chromium \d+ for the crawl from (\S+)", log.read_text())
    assert served, log.read_text()
    folder = Path(served.group(1))
    assert not folder.exists(), "the browser's temp folder (profile, socket) is removed"
    assert procs_using(folder) == [], "a Chromium outlived the crawl"
    assert not (crawled["crawl_dir"] / "chrome" / "browser.json").exists()


def test_the_html_index_shows_the_browser_outputs(crawled: dict[str, Any]) -> None:
    data = crawled["data"]
    proc = cli(data, "index-html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = data / "html" / "index.html"
    snapshots = {r[0] for r in crawled["rows"]}
    titles = {r[3] for r in crawled["rows"] if r[1] == "title"}
    with PipeBrowser(width=1200, height=900) as b:
        b.goto(index.as_uri())
        assert b.wait_for("document.readyState === 'complete' && "
                          "[...document.images].every(i => i.complete)")
        thumbs = b.eval("[...document.querySelectorAll('img.thumb')].map("
                        "i => [i.naturalWidth, i.naturalHeight])")
        # one per snapshot, each the screenshot itself (the viewport it was taken at)
        assert len(thumbs) == len(snapshots) and all(t == [1280, 900] for t in thumbs), thumbs
        links = b.eval("[...document.querySelectorAll('.views a')].map("
                       "a => [a.textContent, a.href])")
        by_label: dict[str, list[Path]] = {}
        for label, href in links:
            by_label.setdefault(label, []).append(Path(unquote(urlsplit(href).path)))
        assert set(by_label) == {"PDF", "DOM", "single file", "WACZ"}, links
        for label, paths in by_label.items():
            assert len(paths) == len(snapshots), (label, paths)  # every snapshot has each
            for path in paths:  # as the browser resolved the relative links
                assert path.is_file(), (label, path)
        assert all(p.read_bytes().startswith(b"%PDF-") for p in by_label["PDF"])
        for wacz in set(by_label["WACZ"]):  # the crawl's, linked from each of its snapshots
            check = subprocess.run([sys.executable, "-m", "wacz", "validate", "-f", str(wacz)],
                                   capture_output=True, text=True, timeout=120)
            assert check.returncode == 0 and "is valid" in check.stdout, check.stdout
        for dom in by_label["DOM"]:  # the DOM after load opens as the page it was
            b.goto(dom.as_uri())
            assert b.eval("document.title") in titles, dom
        page1 = next(p for p in by_label["single file"] if "<title>Page One<" in p.read_text())
        b.goto(page1.as_uri())
        assert b.wait_for("document.title === 'Page One'"), "the single file opens as the page"
        image_ok = b.eval("[...document.images].every(i => i.naturalWidth > 0)")
        assert image_ok, "its images are inlined, not links to the network"
