"""The browser plugins (screenshot, pdf, dom, singlefile) on the crawl's one Chromium
(plugins/chrome), run by hand as the pipeline runs them: real Chromium, real egress proxy,
the local site."""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from pathlib import Path

import psutil
import pytest

from tests.browser.conftest import CrawlBrowser, procs_using
from tests.browser.pipe_browser import chrome_hook
from tests.plugins.pluginrun import HookRun, run_hook
from tests.sitesrv import SiteServer

BROWSER_HOOKS = ("screenshot", "pdf", "dom", "singlefile")


def hook(plugin: str, crawl: CrawlBrowser | Path, url: str, env: dict[str, str],
         name: str = "snap") -> HookRun:
    """Run a snapshot hook of `plugin` in a snapshot folder of the crawl."""
    crawl_dir = crawl.crawl_dir if isinstance(crawl, CrawlBrowser) else crawl
    snap = crawl_dir / "snapshots" / name
    return run_hook(plugin, snap, [f"--url={url}", "--snapshot-id=s1", "--crawl-id=crawl-1"],
                    {**env, "CRAWL_DIR": str(crawl_dir)})


def pages_open(crawl: CrawlBrowser) -> list[str]:
    """URLs of the tabs open in the crawl's browser, asked over its own socket."""
    import socket

    mod = chrome_hook()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(crawl.info()["socket"])
        cdp = mod.CDP(s.fileno(), s.fileno(), "test")
        targets = cdp.call("Target.getTargets")["targetInfos"]
    return [t["url"] for t in targets if t["type"] == "page"]


def test_every_browser_hook_works_in_the_crawl_browser(
        crawl_browser: CrawlBrowser, public: SiteServer, proxy_env: dict[str, str]) -> None:
    url = f"{public.base_url}/browser/styled.html"
    before = crawl_browser.info()["launches"]
    runs = {p: hook(p, crawl_browser, url, proxy_env) for p in BROWSER_HOOKS}
    for plugin, run in runs.items():
        assert run.rc == 0 and run.result.status == "succeeded", run.stdout + run.stderr
        assert run.result.output_json["browser"] == "crawl", plugin
        assert run.result.output_json["status"] == 200
    assert crawl_browser.info()["launches"] == before, "one browser for all of them"
    deadline = time.monotonic() + 5  # Target.closeTarget answers before the tab is gone
    while url in pages_open(crawl_browser) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert url not in pages_open(crawl_browser), "every hook closed its tab"

    shot = runs["screenshot"].cwd / "screenshot.png"
    assert struct.unpack(">II", shot.read_bytes()[16:24]) == (1280, 900)
    pdf = (runs["pdf"].cwd / "output.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and runs["pdf"].result.output_json["pages"] >= 1
    dom = (runs["dom"].cwd / "output.html").read_text()
    assert dom.startswith("<!DOCTYPE html>")
    assert 'id="added">Added by script.</p>' in dom, "the DOM after scripts ran"
    assert runs["dom"].result.output_json["title"] == "Styled Page"
    single = (runs["singlefile"].cwd / "singlefile.html").read_text()
    assert "<script" not in single and "Added by script." in single
    assert 'src="data:image/png;base64,' in single, "the image is inlined"
    assert "#fffbe6" in single and "styled.css" not in single, "the stylesheet is inlined"
    assert 'url("data:image/png;base64,' in single, "so is the image the CSS points at"
    info = runs["singlefile"].result.output_json
    assert info["inlined"] == 2 and info["left_as_links"] == 0, info


@pytest.mark.parametrize("plugin", BROWSER_HOOKS)
def test_a_refused_redirect_fails_with_the_proxy_reason(
        plugin: str, crawl_browser: CrawlBrowser, public: SiteServer, secret: SiteServer,
        proxy_env: dict[str, str]) -> None:
    before = len(secret.requests)
    run = hook(plugin, crawl_browser, f"{public.base_url}/away", proxy_env, name=plugin)
    assert run.rc == 1 and run.result.status == "failed", run.stdout + run.stderr
    assert "loopback" in (run.result.error or ""), run.result
    assert secret.requests[before:] == [], "the browser never reached the refused server"
    assert [p.name for p in run.cwd.iterdir() if not p.name.endswith(".log")] == [], \
        "nothing made of the proxy's answer is kept"


def test_a_dead_browser_is_replaced_for_the_next_hook(
        crawl_browser: CrawlBrowser, public: SiteServer, proxy_env: dict[str, str]) -> None:
    old = crawl_browser.info()
    os.kill(old["pid"], signal.SIGKILL)
    started = time.monotonic()
    run = hook("dom", crawl_browser, f"{public.base_url}/page1.html", proxy_env, name="after")
    assert run.result.status == "succeeded", run.stdout + run.stderr
    assert time.monotonic() - started < 30
    new = crawl_browser.info()
    assert new["pid"] != old["pid"] and psutil.pid_exists(new["pid"])
    assert new["launches"] == old["launches"] + 1
    assert new["deaths"][-1] == "chromium killed by signal 9", new


def test_title_falls_back_to_the_rendered_title(
        crawl_browser: CrawlBrowser, public: SiteServer, proxy_env: dict[str, str]) -> None:
    url = f"{public.base_url}/browser/scripted-title.html"
    dom = hook("dom", crawl_browser, url, proxy_env, name="scripted")
    assert dom.result.output_json["title"] == "Title Set By Script"
    title = hook("title", crawl_browser, url, proxy_env, name="scripted")
    assert title.result.status == "succeeded", title.stdout + title.stderr
    assert title.result.output_str == "Title Set By Script"
    assert title.result.output_json["source"] == "dom/output.html"


def test_without_a_crawl_browser_a_hook_starts_and_stops_its_own(
        tmp_path: Path, public: SiteServer, proxy_env: dict[str, str]) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = hook("pdf", tmp_path, f"{public.base_url}/page1.html",
               {**proxy_env, "TMPDIR": str(tmp)})
    assert run.result.status == "succeeded", run.stdout + run.stderr
    assert run.result.output_json["browser"] == "own"
    assert list(tmp.iterdir()) == [] and procs_using(tmp) == []


def test_a_missing_chromium_fails_the_daemon_and_the_hooks_at_once(
        tmp_path: Path, public: SiteServer) -> None:
    env = {"CHROMIUM_BINARY": str(tmp_path / "none"), "PATH": str(tmp_path)}
    run = hook("dom", tmp_path, f"{public.base_url}/page1.html", env)
    assert run.result.status == "failed"
    assert run.result.output_str == "chromium not found: run archiveflow install"
    data = json.dumps(run.result.model_dump(mode="json"))
    assert "Traceback" not in data
