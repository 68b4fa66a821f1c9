"""One egress policy for every fetch: crawls through the installed `archiveflow` command.

Two local servers play the parts. `secret` (on 127.0.0.1) is what a page must never make us
fetch; every test asserts it saw no request. `public` is an origin the crawl may fetch: it is
on this machine too (nothing here leaves it), reached by a host name from /etc/hosts, and
made reachable with EGRESS_ALLOW_ADDRESSES=<its address>:<its port> -- the product's own
"this one non-public server is allowed" setting -- so the real proxy path is tested: the
name resolved by the proxy, that one origin allowed, every other private address refused.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.command import ARCHIVEFLOW

PLUGINS = "headers,wget,title,parse_html_urls,screenshot"
LEGACY_FORMS = ("0x7f000001", "2130706433", "127.1", "0177.0.0.1")  # all mean 127.0.0.1


@dataclass
class Origin:
    """A tiny HTTP server on `addr`: path -> (status, headers, body); it logs every path."""

    addr: str
    pages: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def start(self) -> None:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                origin.requests.append(self.path)
                status, headers, body = origin.pages.get(
                    self.path.split("?")[0], (404, {"Content-Type": "text/plain"}, b"no"))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((self.addr, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def html(self, path: str, body: str) -> None:
        self.pages[path] = (200, {"Content-Type": "text/html; charset=utf-8"}, body.encode())

    def redirect(self, path: str, to: str) -> None:
        self.pages[path] = (302, {"Location": to}, b"")


def _local_name() -> tuple[str, str] | None:
    """A host name (not localhost) that resolves to an address of this machine we can bind."""
    names = [socket.gethostname()]
    try:
        for line in Path("/etc/hosts").read_text().splitlines():
            names += line.split("#")[0].split()[1:]
    except OSError:
        pass
    for name in dict.fromkeys(names):
        if not name or "localhost" in name:
            continue
        try:
            addr = socket.gethostbyname(name)
            with socket.socket() as s:
                s.bind((addr, 0))
        except OSError:
            continue
        return name, addr
    return None


@pytest.fixture(scope="module")
def secret() -> Iterator[Origin]:
    o = Origin("127.0.0.1")
    o.html("/secret.html", "<title>Secret</title><p>internal only</p>")
    o.pages["/secret.png"] = (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\nsecret")
    o.pages["/secret.css"] = (200, {"Content-Type": "text/css"}, b"body{color:red}")
    o.pages["/feed.xml"] = (200, {"Content-Type": "application/rss+xml"},
                            b"<rss><channel><item><link>http://example.invalid/x</link>"
                            b"</item></channel></rss>")
    o.pages["/sitemap.xml"] = (200, {"Content-Type": "application/xml"},
                               b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                               b"<url><loc>http://example.invalid/y</loc></url></urlset>")
    o.start()
    yield o
    o.stop()


@pytest.fixture(scope="module")
def public(secret: Origin) -> Iterator[tuple[Origin, str]]:
    found = _local_name()
    if found is None:
        pytest.skip("no host name in /etc/hosts resolves to an address of this machine")
    name, addr = found
    o = Origin(addr)
    o.start()
    s = f"127.0.0.1:{secret.port}"
    o.html("/page.html", f"""<!doctype html><title>Public page</title>
<link rel="stylesheet" href="http://{name}:{secret.port}/secret.css">
<img src="http://{s}/secret.png">
<p>Hello from the public origin.</p>
<a href="http://2130706433:{secret.port}/secret.html">decimal</a>
<a href="http://{s}/secret.html">literal</a>
<a href="/other.html">same origin</a>""")
    o.html("/other.html", "<title>Other public page</title>")
    o.redirect("/to-secret", f"http://{s}/secret.html")
    o.pages["/index.xml"] = (200, {"Content-Type": "application/xml"}, (
        '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<sitemap><loc>http://{s}/sitemap.xml</loc></sitemap></sitemapindex>").encode())
    yield o, name
    o.stop()


def _add(data: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [ARCHIVEFLOW, "--data-dir", str(data), "add", "--plugins", PLUGINS, *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60", **(env or {})})


def _results(data: Path) -> dict[tuple[str, str], dict[str, Any]]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.url, a.plugin, a.status, a.output_str, a.error, a.output_json "
            "FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id").fetchall()
    finally:
        con.close()
    return {(u, p): {"status": st, "output": o or "", "error": e or "",
                     "json": json.loads(j) if isinstance(j, str) else (j or {})}
            for u, p, st, o, e, j in rows}


def _urls(data: Path) -> set[str]:
    if not (data / "index.duckdb").exists():
        return set()
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return {u for (u,) in con.execute("SELECT url FROM snapshot").fetchall()}
    finally:
        con.close()


def test_legacy_ipv4_forms_are_refused_with_their_reason(
        tmp_path: Path, secret: Origin, prefect_api: str) -> None:
    before = len(secret.requests)
    urls = [f"http://{form}:{secret.port}/secret.html" for form in LEGACY_FORMS]
    urls.append(f"http://0:{secret.port}/secret.html")  # 0.0.0.0: this machine on Linux
    proc = _add(tmp_path, *urls)
    assert proc.returncode != 0, proc.stderr[-2000:]
    for form in (*LEGACY_FORMS, "0"):
        line = next((ln for ln in proc.stderr.splitlines() if f"//{form}:" in ln), "")
        assert "URL_ALLOW_PRIVATE" in line, (form, proc.stderr[-2000:])
    assert "= 127.0.0.1" in proc.stderr and "= 0.0.0.0" in proc.stderr, proc.stderr[-2000:]
    assert _urls(tmp_path) == set()
    assert secret.requests[before:] == []


def test_allow_private_archives_them_as_before(
        tmp_path: Path, secret: Origin, prefect_api: str) -> None:
    before = len(secret.requests)
    proc = _add(tmp_path, "--allow-private", f"http://127.1:{secret.port}/secret.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    url = f"http://127.0.0.1:{secret.port}/secret.html"  # stored as a browser shows it
    res = _results(tmp_path)
    assert res[(url, "wget")]["status"] == "succeeded", res
    assert res[(url, "title")]["output"] == "Secret"
    assert res[(url, "screenshot")]["status"] == "succeeded", res[(url, "screenshot")]
    assert "/secret.html" in secret.requests[before:]


def test_a_name_that_resolves_to_a_private_address_is_refused_by_every_hook(
        tmp_path: Path, secret: Origin, public: tuple[Origin, str], prefect_api: str) -> None:
    _, name = public
    before = len(secret.requests)
    url = f"http://{name}:{secret.port}/secret.html"
    proc = _add(tmp_path, url)
    res = _results(tmp_path)
    assert res, proc.stderr[-2000:]
    for plugin in ("headers", "wget", "title", "screenshot"):
        r = res[(url, plugin)]
        assert r["status"] == "failed", (plugin, r)
        assert "egress" in r["error"] and "URL_ALLOW_PRIVATE" in r["error"], (plugin, r)
    assert not list((tmp_path / "users").rglob("secret.html")), "a refusal was saved as a page"
    assert secret.requests[before:] == []


def test_public_page_redirects_and_requisites_on_private_addresses(
        tmp_path: Path, secret: Origin, public: tuple[Origin, str], prefect_api: str) -> None:
    origin, name = public
    before = len(secret.requests)
    page = f"http://{name}:{origin.port}/page.html"
    hop = f"http://{name}:{origin.port}/to-secret"
    allow = f"EGRESS_ALLOW_ADDRESSES={origin.addr}:{origin.port}"
    proc = _add(tmp_path, "--depth", "1", "--config", allow, page, hop)
    res = _results(tmp_path)
    assert res[(page, "wget")]["status"] == "succeeded", (res.get((page, "wget")), proc.stderr)
    refused = {r["url"] for r in res[(page, "wget")]["json"]["refused"]}
    assert refused == {f"http://127.0.0.1:{secret.port}/secret.png",
                       f"http://{name}:{secret.port}/secret.css"}, res[(page, "wget")]
    assert res[(page, "screenshot")]["status"] == "succeeded", res[(page, "screenshot")]
    for plugin in ("headers", "wget", "title", "screenshot"):
        r = res[(hop, plugin)]
        assert r["status"] == "failed" and "egress" in r["error"], (plugin, r)
    # Outlinks: the same-origin page is archived, the private ones (decimal IP included) not.
    urls = _urls(tmp_path)
    assert f"http://{name}:{origin.port}/other.html" in urls, urls
    assert not any(str(secret.port) in u for u in urls), urls
    assert secret.requests[before:] == []


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433"])
def test_a_feed_url_on_a_private_address_is_not_fetched(
        tmp_path: Path, secret: Origin, host: str, prefect_api: str) -> None:
    # A feed/sitemap URL given to `add` is not a seed but a file the seed parser fetches.
    before = len(secret.requests)
    proc = _add(tmp_path, f"http://{host}:{secret.port}/feed.xml")
    assert "egress" in proc.stderr and "URL_ALLOW_PRIVATE" in proc.stderr, proc.stderr[-2000:]
    assert _urls(tmp_path) == set()
    assert secret.requests[before:] == []


def test_feed_and_child_sitemap_on_private_addresses_are_not_fetched(
        tmp_path: Path, secret: Origin, public: tuple[Origin, str], prefect_api: str) -> None:
    origin, name = public
    before = len(secret.requests)
    proc = _add(tmp_path / "feed", f"http://{name}:{secret.port}/feed.xml")
    assert proc.returncode != 0 and "egress" in proc.stderr, proc.stderr[-2000:]
    allow = f"EGRESS_ALLOW_ADDRESSES={origin.addr}:{origin.port}"
    proc = _add(tmp_path / "index", "--config", allow,
                f"http://{name}:{origin.port}/index.xml")
    assert proc.returncode != 0 and "egress" in proc.stderr, proc.stderr[-2000:]
    assert "/index.xml" in origin.requests
    assert _urls(tmp_path / "feed") == _urls(tmp_path / "index") == set()
    assert secret.requests[before:] == []
