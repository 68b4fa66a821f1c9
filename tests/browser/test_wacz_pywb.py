"""The WACZ of a crawl, replayed by another archive's software: `archiveflow export --format
wacz` of the browser crawl (`crawled`), checked by `wacz validate`, loaded into pywb
(`wb-manager add --unpack-wacz`: pywb takes the WARCs and the WACZ's own CDXJ index) and
served on 127.0.0.1; every page and resource is fetched through replay and compared with the
live site.

pywb runs from its own virtualenv (`make pywb`, which `make test` runs): it pins redis<3,
which Prefect cannot share a virtualenv with.

What is compared how:
- raw replay (`id_`): pywb serves the archived body unchanged; it must equal the live body
  byte for byte, for every 200 response in the index (pages, stylesheet).
- rewritten replay (`mp_`, what a reader sees in the frame): pywb inserts its scripts (the
  `<!-- WB Insert -->` block in <head>) and rewrites absolute and root-relative URLs to point
  into the archive, so the bytes differ for that reason. There: the visible text equals the
  live page's, and no link or resource of the page points outside the archive.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from archiveflow.store.wacz import page_text
from tests.browser.conftest import cli

REPO = Path(__file__).resolve().parents[2]
PYWB_BIN = REPO / ".venv-pywb" / "bin"
SERVE = Path(__file__).resolve().parent / "pywb_serve.py"
COLL = "archive"
INSERT = re.compile(r"<!-- WB Insert -->.*?<!-- End WB Insert -->\n?", re.DOTALL)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def wacz(crawled: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wacz") / "crawl.wacz"
    proc = cli(crawled["data"], "export", "--format", "wacz", "--crawl", crawled["crawl_id"],
               "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def pywb(wacz: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pywb serving the WACZ as collection `archive`, from a temp folder; its base URL."""
    if not (PYWB_BIN / "python").exists():
        pytest.fail("pywb's own virtualenv (.venv-pywb) is missing: run `make pywb` "
                    "(`make test` builds it)")
    root = tmp_path_factory.mktemp("pywb")
    for args in (["init", COLL], ["add", "--unpack-wacz", COLL, str(wacz)]):
        done = subprocess.run([str(PYWB_BIN / "wb-manager"), *args], cwd=root, text=True,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    log = root / "pywb.stderr.log"  # a file: its access log must never fill a pipe
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(PYWB_BIN / "python"), str(SERVE)], cwd=root, text=True,
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while port is None:  # pywb prints chatter on stdout too; ours is `port N`
            assert time.monotonic() < deadline, "pywb did not start listening in 60 s"
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                line = proc.stdout.readline()
                assert line, f"pywb exited {proc.wait()}: {log.read_text()[-2000:]}"
                if m := re.fullmatch(r"port (\d+)\n", line):
                    port = int(m.group(1))
        yield f"http://127.0.0.1:{port}/{COLL}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _index(wacz: Path) -> list[tuple[str, dict[str, Any]]]:
    """(timestamp, fields) of each line of the WACZ's CDXJ index."""
    with zipfile.ZipFile(wacz) as z:
        lines = gzip.decompress(z.read("indexes/index.cdx.gz")).decode().splitlines()
    out = []
    for line in lines:
        _key, ts, fields = line.split(" ", 2)
        out.append((ts, json.loads(fields)))
    return out


def test_the_wacz_validates(wacz: Path) -> None:
    check = subprocess.run([sys.executable, "-m", "wacz", "validate", "-f", str(wacz)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "is valid" in check.stdout, check.stdout + check.stderr


def test_pywb_replays_every_capture_byte_for_byte(wacz: Path, pywb: str,
                                                  crawled: dict[str, Any]) -> None:
    captures = [(ts, f) for ts, f in _index(wacz)
                if str(f.get("status")) == "200" and f.get("mime") != "warc/revisit"]
    urls = {f["url"] for _, f in captures}
    site = crawled["site"]
    # the pages of the crawl and what wget fetched with them
    assert {f"{site}/page1.html", f"{site}/page2.html", f"{site}/style.css"} <= urls, urls
    for ts, fields in captures:
        status, headers, body = _get(f"{pywb}/{ts}id_/{fields['url']}")
        assert status == 200, (fields["url"], status, body[:300])
        live_status, _, live = _get(fields["url"])
        assert live_status == 200 and body == live, fields["url"]
        # the capture asked for, not another one of the same URL
        assert headers["Content-Location"].startswith(f"{pywb}/{ts}id_/"), headers


class _Refs(HTMLParser):
    """Every href/src of a document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("href", "src") and v]


def test_pywb_shows_each_page_as_it_was_live(wacz: Path, pywb: str) -> None:
    with zipfile.ZipFile(wacz) as z:
        pages = [json.loads(line) for line in
                 z.read("pages/pages.jsonl").decode().splitlines()[1:]]
    assert len(pages) >= 3, pages
    for page in pages:
        ts = re.sub(r"\D", "", page["ts"])[:14]  # the capture pages.jsonl names
        status, _, body = _get(f"{pywb}/{ts}mp_/{page['url']}")
        assert status == 200, (page["url"], status)
        html = body.decode()
        assert INSERT.search(html), "pywb's replay insert (banner/wombat scripts)"
        assert f'wbinfo.url = "{page["url"]}";' in html
        page_html = INSERT.sub("", html)
        _, _, live = _get(page["url"])
        assert page_text(page_html) == page_text(live.decode()), page["url"]
        assert page_text(page_html)[0] == page["text"], "pages.jsonl's text is the page's"
        refs = _Refs()
        refs.feed(page_html)
        outside = [r for r in refs.refs if re.match(r"(?i)[a-z][a-z0-9+.-]*:|//|/", r)
                   and not r.startswith(pywb.removesuffix(COLL))
                   and not r.startswith(f"/{COLL}/")
                   and not re.match(r"(?i)(mailto|javascript):", r)]
        assert not outside, f"{page['url']}: links out of the archive: {outside}"
