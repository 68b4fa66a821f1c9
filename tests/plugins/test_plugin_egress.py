"""The snapshot and seed hooks behind a real egress proxy (tasks/egress.py, in this process),
run by hand as a user would: what the proxy refuses is never fetched, and the hook says why.
Plus the page-as-served and non-ASCII fixes of the same hooks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from archiveflow.tasks.egress import EgressProxy
from archiveflow.tasks.egress_policy import Policy
from pluginrun import HookRun, run_hook
from sitesrv import SiteServer

SITE = Path(__file__).resolve().parents[1] / "fixtures" / "site"
SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
Hook = Callable[..., HookRun]


@pytest.fixture(scope="module")
def secret() -> Iterator[SiteServer]:
    """A second local server: what the policy must keep the hooks away from."""
    srv = SiteServer(SITE, mounts={"/seeds/": SEEDS})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def public(secret: SiteServer) -> Iterator[SiteServer]:
    """The origin the proxy lets through (by an explicit allow-list: it is local too); it
    redirects /away to the secret server."""
    srv = SiteServer(SITE, mounts={"/seeds/": SEEDS},
                     redirects={"/away": f"{secret.base_url}/page1.html"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxy_env(public: SiteServer) -> Iterator[dict[str, str]]:
    proxy = EgressProxy()
    origin = public.base_url.removeprefix("http://")
    url = proxy.url(Policy(allow_addresses=frozenset({origin})))
    yield {"http_proxy": url, "https_proxy": url, "no_proxy": ""}
    proxy.close()


@pytest.mark.parametrize("plugin", ["headers", "wget", "title", "parse_html_urls"])
def test_a_refused_redirect_fails_the_hook_with_the_reason(
        hook: Hook, plugin: str, public: SiteServer, secret: SiteServer,
        proxy_env: dict[str, str]) -> None:
    before = len(secret.requests)
    run = hook(plugin, f"{public.base_url}/away", **proxy_env)
    assert run.result.status == "failed", run.stdout + run.stderr
    assert "egress" in (run.result.error or "") and "loopback" in (run.result.error or ""), \
        run.result
    assert secret.requests[before:] == []
    saved = [p for p in run.cwd.rglob("*") if p.is_file() and p.name == "page1.html"]
    assert not saved, "the proxy's refusal was kept as the page"


@pytest.mark.parametrize("plugin", ["headers", "wget", "title", "parse_html_urls", "screenshot"])
def test_a_server_the_proxy_cannot_reach_fails_the_hook(hook: Hook, plugin: str,
                                                        closed_port: int) -> None:
    proxy = EgressProxy()
    try:
        url = proxy.url(Policy(allow_private=True))
        run = hook(plugin, f"http://127.0.0.1:{closed_port}/",
                   http_proxy=url, https_proxy=url, no_proxy="")
    finally:
        proxy.close()
    assert run.result.status == "failed", run.stdout + run.stderr
    assert "connection refused" in (run.result.error or ""), run.result
    kept = [p.name for p in run.cwd.rglob("*") if p.is_file() and p.suffix in ("", ".html", ".png")]
    assert not kept, f"the proxy's 502 was kept: {kept}"


def test_wget_keeps_the_public_page_and_lists_refused_requisites(
        hook: Hook, public: SiteServer, secret: SiteServer, proxy_env: dict[str, str]) -> None:
    before = len(secret.requests)
    img, css = f"{secret.base_url}/img/logo.png", f"{secret.base_url}/style.css"
    page = f"{public.base_url}/requisites?img={quote(img)}&css={quote(css)}"
    run = hook("wget", page, **proxy_env)
    assert run.result.status == "succeeded", run.stdout
    refused = run.result.output_json["refused"]
    assert {r["url"] for r in refused} == {img, css}
    assert all("loopback" in r["reason"] for r in refused), refused
    assert not list(run.cwd.rglob("logo.png")) and not list(run.cwd.rglob("style.css"))
    assert secret.requests[before:] == []


def test_parse_html_urls_reads_the_page_as_served(hook: Hook, site_url: str) -> None:
    wget = hook("wget", f"{site_url}/home/")
    assert wget.result.status == "succeeded", wget.stdout
    info = json.loads((wget.cwd / "wget.json").read_text())
    assert info["original_html"] == info["main_html"] + ".orig"
    run = hook("parse_html_urls", f"{site_url}/home/")
    assert run.result.output_json["source"] == info["original_html"]
    # The converted copy says index.html for href="/home/": a second URL of this page.
    assert [s.url for s in run.snapshots] == [f"{site_url}/page1.html"]


def test_headers_of_a_non_ascii_path(hook: Hook, site_url: str) -> None:
    run = hook("headers", f"{site_url}/Köln")
    assert run.result.status == "succeeded", run.stdout + run.stderr
    assert run.result.output_json["status"] == 404


def test_seeds_do_not_fetch_a_refused_feed_or_child_sitemap(
        tmp_path: Path, public: SiteServer, secret: SiteServer,
        proxy_env: dict[str, str]) -> None:
    before = len(secret.requests)
    feed = run_hook("seeds", tmp_path / "a", [f"--source-url={secret.base_url}/seeds/rss.xml"],
                    proxy_env)
    assert feed.rc == 1 and "egress" in (feed.result.error or ""), feed.stdout
    child = f"{secret.base_url}/seeds/sitemap_pages.xml"
    index = f"{public.base_url}/sitemap-index?loc={quote(child)}"
    run = run_hook("seeds", tmp_path / "b", [f"--source-url={index}", "--parser=sitemap"],
                   proxy_env)
    assert run.rc == 1 and "egress" in (run.result.error or ""), run.stdout + run.stderr
    assert not run.snapshots
    assert secret.requests[before:] == []
    # Control: the same index pointing at the allowed origin is read through the proxy.
    own = quote(public.base_url + "/seeds/sitemap_pages.xml")
    ok = f"{public.base_url}/sitemap-index?loc={own}"
    run = run_hook("seeds", tmp_path / "c", [f"--source-url={ok}", "--parser=sitemap"],
                   proxy_env)
    assert run.rc == 0 and run.snapshots, run.stdout + run.stderr
