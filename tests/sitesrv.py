"""A small threaded HTTP server for tests: serves a folder on 127.0.0.1, port 0.

    with SiteServer(SITE_DIR, mounts={"/seeds/": SEEDS_DIR}) as srv:
        srv.base_url  # "http://127.0.0.1:40123"

- A redirect map answers 302 with a Location (``/redirect`` → ``/page3.html``,
  ``/redirect-chain`` → ``/redirect``).
- ``/slow?s=N`` answers after N seconds (for timeouts).
- ``/requisites?img=URL&css=URL&a=URL`` and ``/sitemap-index?loc=URL`` make a page or a
  sitemap index pointing at URLs given in the query (e.g. on another test server).
- A missing path answers 404 with a small HTML page that has a title (like real servers).
- Files under a mounted prefix are served from another folder; their ``*.xml``, ``*.html``
  and ``*.jsonl`` files are templates in which ``{{BASE}}`` becomes the server's base URL, so
  fixtures such as a sitemap index can point at URLs on this very server.
"""

from __future__ import annotations

import mimetypes
import posixpath
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_REDIRECTS: Final[dict[str, str]] = {
    "/redirect": "/page3.html",
    "/redirect-chain": "/redirect",
}
TEMPLATE_SUFFIXES: Final[frozenset[str]] = frozenset({".xml", ".html", ".jsonl"})
NOT_FOUND_BODY: Final[bytes] = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found - Test Site</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested page does not exist.</p>"
    b'<p><a href="/index.html">Back home</a></p></body></html>\n'
)


def _generated(path: str, qs: dict[str, list[str]]) -> tuple[str, bytes] | None:
    """(content type, body) of the pages made from their query, for URLs that point at
    another server (whose port is known only at run time); None for other paths."""
    from html import escape

    if path == "/requisites":
        # /requisites?img=URL&css=URL&a=URL: a page with those images, stylesheets and links.
        tags = [f'<img src="{escape(u)}">' for u in qs.get("img", [])]
        tags += [f'<link rel="stylesheet" href="{escape(u)}">' for u in qs.get("css", [])]
        tags += [f'<a href="{escape(u)}">link</a>' for u in qs.get("a", [])]
        body = "<!DOCTYPE html><title>Requisites</title><p>Generated page.</p>" + "".join(tags)
        return "text/html; charset=utf-8", body.encode()
    if path == "/sitemap-index":
        # /sitemap-index?loc=URL: a sitemap index whose child sitemaps are those URLs.
        locs = "".join(f"<sitemap><loc>{escape(u)}</loc></sitemap>" for u in qs.get("loc", []))
        body = ('<?xml version="1.0"?><sitemapindex '
                f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</sitemapindex>')
        return "application/xml; charset=utf-8", body.encode()
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle delay: otherwise each keep-alive response stalls
    # ~40 ms on delayed ACKs, which would dominate every timing taken against this server.
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output clean

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.server.requests.append(path)
        if path == "/slow":
            # /slow?s=N: answer after N seconds (at most 10), to exercise hook timeouts.
            qs = parse_qs(parts.query)
            time.sleep(min(float(qs.get("s", ["2"])[0]), 10.0))
            self._send(HTTPStatus.OK, b"<title>Slow</title>", "text/html", send_body)
            return
        generated = _generated(path, parse_qs(parts.query))
        if generated is not None:
            self._send(HTTPStatus.OK, generated[1], generated[0], send_body)
            return
        target = self.server.redirects.get(path)
        if target is not None:
            self._send(HTTPStatus.FOUND, b"", "text/html", send_body, {"Location": target})
            return
        found = self.server.resolve(path)
        if found is None:
            self._send(HTTPStatus.NOT_FOUND, NOT_FOUND_BODY, "text/html; charset=utf-8", send_body)
            return
        file, templated = found
        body = file.read_bytes()
        if templated:
            body = body.replace(b"{{BASE}}", self.server.base_url.encode())
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/xml", "application/json"):
            ctype += "; charset=utf-8"
        self._send(HTTPStatus.OK, body, ctype, send_body)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        ctype: str,
        send_body: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, mounts: dict[str, Path], redirects: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.mounts = mounts
        self.redirects = redirects
        self.requests: list[str] = []
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"

    def resolve(self, path: str) -> tuple[Path, bool] | None:
        """Map a URL path to (file, is_template), or None when there is no such file."""
        root, rel, templated = self.root, path, False
        for prefix, folder in self.mounts.items():
            if path.startswith(prefix):
                root, rel, templated = folder, path[len(prefix) :], True
                break
        rel = posixpath.normpath("/" + rel).lstrip("/")
        file = (root / rel) if rel not in ("", ".") else root
        if file.is_dir():
            file = file / "index.html"
        if not file.is_file() or root.resolve() not in file.resolve().parents:
            return None
        return file, templated and file.suffix in TEMPLATE_SUFFIXES


class SiteServer:
    """Serve a folder over HTTP on 127.0.0.1 in a background thread, as a context manager."""

    def __init__(
        self,
        root: Path | str,
        mounts: dict[str, Path | str] | None = None,
        redirects: dict[str, str] | None = None,
    ) -> None:
        self._server = _Server(
            Path(root),
            {k: Path(v) for k, v in (mounts or {}).items()},
            dict(DEFAULT_REDIRECTS if redirects is None else redirects),
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sitesrv", daemon=True
        )

    @property
    def base_url(self) -> str:
        """The server's base URL, without a trailing slash."""
        return self._server.base_url

    @property
    def requests(self) -> list[str]:
        """Every path requested so far, in order."""
        return self._server.requests

    def start(self) -> str:
        """Start serving; returns the base URL."""
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    import sys

    here = Path(__file__).parent
    srv = SiteServer(sys.argv[1] if len(sys.argv) > 1 else here / "fixtures" / "site",
                     mounts={"/seeds/": here / "fixtures" / "seeds"})
    print(srv.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
