"""`--scope` (CRAWL_SCOPE): which discovered links a depth crawl follows (issue 13 point 6).
The default is `host`; another port is another host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.flows.conftest import run_cli
from tests.sitesrv import SiteServer


@pytest.fixture()
def blog(tmp_path: Path, site_url: str) -> Iterator[str]:
    root = tmp_path / "blog"
    (root / "posts").mkdir(parents=True)
    (root / "posts" / "index.html").write_text(
        "<html><head><title>Posts</title></head><body>"
        '<a href="/posts/one.html">one</a> <a href="/about.html">about</a> '
        f'<a href="{site_url}/page1.html">elsewhere</a></body></html>')
    (root / "posts" / "one.html").write_text("<html><title>One</title><body>1</body></html>")
    (root / "about.html").write_text("<html><title>About</title><body>a</body></html>")
    srv = SiteServer(root)
    srv.start()
    try:
        yield srv.base_url
    finally:
        srv.stop()


def _paths(data: Path) -> set[str]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return {"/" + u.split("/", 3)[3] for (u,) in con.execute("SELECT url FROM snapshot")
                .fetchall()}
    finally:
        con.close()


@pytest.mark.parametrize(("scope", "want"), [
    (None, {"/posts/index.html", "/posts/one.html", "/about.html"}),   # host, the default
    ("prefix", {"/posts/index.html", "/posts/one.html"}),
    ("page", {"/posts/index.html"}),
    ("any", {"/posts/index.html", "/posts/one.html", "/about.html", "/page1.html"}),
])
def test_scope_decides_which_links_are_followed(tmp_path: Path, blog: str, scope: str | None,
                                                want: set[str], prefect_api: str) -> None:
    extra = ["--scope", scope] if scope else []
    proc = run_cli(tmp_path / "data", "add", "--allow-private", "--depth", "1", "--plugins",
                   "wget,parse_html_urls", *extra, f"{blog}/posts/index.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _paths(tmp_path / "data") == want


def test_a_bad_scope_is_a_usage_error(tmp_path: Path, site_url: str) -> None:
    proc = run_cli(tmp_path, "add", "--scope", "web", f"{site_url}/page1.html", timeout=60)
    assert proc.returncode == 2 and "--scope" in proc.stderr, proc.stderr
