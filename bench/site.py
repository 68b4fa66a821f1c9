"""A generated local site for the benchmarks, and a fast threaded server for it.

    .venv/bin/python bench/site.py --n 200 --out /tmp/site   # write it and serve it (Ctrl-C)

Pages are laid out as a 3-ary heap: page i links to pages 3i+1, 3i+2, 3i+3; a page without
children (a leaf) links to three other pages instead, so every page has 3 links. The crawl
seeds are the pages at heap depth 0, 3, 6, …: every page is then at most 2 links below a seed,
so a depth-2 crawl from the seeds reaches exactly the N pages, each once. Every page also
pulls a stylesheet, a script, an image and the favicon (requisites for wget), and is ~5 KB.
"""

from __future__ import annotations

import argparse
import mimetypes
import random
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

LINKS: Final[int] = 3
WORDS: Final[tuple[str, ...]] = (
    "archive", "snapshot", "crawl", "record", "index", "page", "link", "result", "hook",
    "plugin", "folder", "binary", "machine", "server", "flow", "task", "column", "table",
    "query", "history", "capture", "document", "network", "local", "static", "content",
)
# A 1x1 transparent PNG and a tiny ICO-shaped blob: real enough for wget and the favicon hook.
PNG: Final[bytes] = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000100ffff03000006000557bfabd40000000049454e44ae426082")
ICO: Final[bytes] = bytes.fromhex("00000100010001010000010020003000000016000000") + PNG


def heap_depth(i: int) -> int:
    """Depth of page i in the 3-ary heap (0 for the root)."""
    d, first, width = 0, 0, 1
    while i >= first + width:
        first += width
        width *= LINKS
        d += 1
    return d


def page_links(i: int, n: int) -> list[int]:
    """The pages page i links to."""
    kids = [c for c in range(LINKS * i + 1, LINKS * i + LINKS + 1) if c < n]
    if kids:
        return kids
    return [(i * 7 + k * 13 + 1) % n for k in range(LINKS)]


def seed_pages(n: int) -> list[int]:
    """Pages at heap depth 0, 3, 6, …: a depth-2 crawl from them reaches every page once."""
    return [i for i in range(n) if heap_depth(i) % 3 == 0]


def page_html(i: int, n: int, size: int = 5000) -> str:
    rnd = random.Random(i)
    links = "\n".join(
        f'<li><a href="/p/{j}.html">page {j}: {" ".join(rnd.choices(WORDS, k=3))}</a></li>'
        for j in page_links(i, n))
    head = (f"<!doctype html>\n<html><head><meta charset=utf-8><title>Page {i} of the "
            f"bench site</title>\n<link rel=stylesheet href=/static/style.css>\n"
            f'<link rel=icon href=/favicon.ico>\n<script src=/static/app.js></script>'
            f"</head>\n<body><h1>Page {i}</h1>\n<img src=/img/{i % 10}.png alt=figure>\n"
            f"<ul>\n{links}\n</ul>\n")
    paras = []
    total = len(head)
    while total < size - 200:
        p = "<p>" + " ".join(rnd.choices(WORDS, k=60)) + ".</p>\n"
        paras.append(p)
        total += len(p)
    return head + "".join(paras) + "</body></html>\n"


@dataclass
class Site:
    """The generated site in memory: path → (content type, body)."""

    n: int
    files: dict[str, tuple[str, bytes]]

    def page_urls(self, base: str) -> list[str]:
        return [f"{base}/p/{i}.html" for i in range(self.n)]

    def seed_urls(self, base: str) -> list[str]:
        return [f"{base}/p/{i}.html" for i in seed_pages(self.n)]

    def write(self, root: Path) -> None:
        for path, (_, body) in self.files.items():
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(body)


def generate(n: int, page_size: int = 5000) -> Site:
    """N pages with links, a stylesheet, a script, 10 images and a favicon."""
    files: dict[str, tuple[str, bytes]] = {
        "/static/style.css": ("text/css", b"body{font-family:sans-serif;max-width:40em}\n" * 20),
        "/static/app.js": ("application/javascript", b"console.log('bench');\n" * 20),
        "/favicon.ico": ("image/x-icon", ICO),
        "/robots.txt": ("text/plain", b"User-agent: *\nAllow: /\n"),
    }
    for k in range(10):
        files[f"/img/{k}.png"] = ("image/png", PNG)
    for i in range(n):
        files[f"/p/{i}.html"] = ("text/html; charset=utf-8",
                                 page_html(i, n, page_size).encode())
    index = "".join(f'<a href="/p/{i}.html">{i}</a>\n' for i in seed_pages(n))
    files["/"] = ("text/html; charset=utf-8", f"<html><body>{index}</body></html>".encode())
    files["/index.html"] = files["/"]
    return Site(n, files)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: wget -r reuses the connection
    # Headers and body go out as two writes; with Nagle on, a keep-alive client's delayed
    # ACK stalls every response by ~40 ms (wget -r measured 20 pages/s instead of hundreds).
    disable_nagle_algorithm = True
    files: dict[str, tuple[str, bytes]] = {}

    def _send(self, head_only: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        hit = self.files.get(path)
        if hit is None:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        else:
            ctype, body = hit
            self.send_response(200)
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._send(False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(True)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet: a log line per request would cost more than the request


class Server:
    """The site served from memory by a threaded HTTP server on 127.0.0.1, port 0."""

    def __init__(self, site: Site) -> None:
        handler = type("SiteHandler", (_Handler,), {"files": site.files})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="bench-site")

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


mimetypes.init()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, help="also write the files here")
    ns = ap.parse_args()
    site = generate(ns.n)
    if ns.out:
        site.write(ns.out)
    with Server(site) as srv:
        print(f"serving {ns.n} pages at {srv.base}/ ({len(site.seed_urls(srv.base))} seeds)",
              flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
