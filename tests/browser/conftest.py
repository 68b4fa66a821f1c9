"""Fixtures for the browser plugins: the local site with a few scripted pages, the egress
proxy every crawl hook goes through, and the crawl's shared Chromium (plugins/chrome) started
by hand as the crawl would start it, stopped as crawl cleanup stops it.

No browser is left after any test. Every process the tests of this package start has
`ARCHIVEFLOW_TEST_BROWSERS=<a value of this run>` in its environment and, as TMPDIR, a temp
folder of this run, where every Chromium profile is made. After each test
(`no_browser_left`), no Chromium may remain whose environment has that value (the browser and
its crash handler, which re-parents itself away from the test) or whose command line names
that folder (its zygotes, renderers and utility processes, which get a clean environment but
carry `--user-data-dir`; they stay findable when their browser was killed with -9). The
package's shared browser has `<value>/shared` and a TMPDIR of its own, checked when the package
ends. Chromium that other people run on the machine has neither.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pytest

from archiveflow.tasks.egress import EgressProxy
from archiveflow.tasks.egress_policy import Policy
from tests.browser.pipe_browser import DAEMON
from tests.command import ARCHIVEFLOW
from tests.sitesrv import SiteServer

TESTS = Path(__file__).resolve().parents[1]
SITE = TESTS / "fixtures" / "site"
PAGES = Path(__file__).resolve().parent / "site"

if shutil.which("chromium") is None:
    pytest.skip("chromium is not installed (make system-deps)", allow_module_level=True)


def procs_using(folder: Path | str) -> list[psutil.Process]:
    """Live processes whose command line mentions `folder` (a Chromium profile is in it)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in arg for arg in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


MARK_ENV = "ARCHIVEFLOW_TEST_BROWSERS"


@dataclass(frozen=True)
class Mark:
    """How to tell the Chromium processes started by some tests: their environment has
    MARK_ENV=`value`, or their command line names `tmp` (their TMPDIR)."""

    value: str
    tmp: Path


def marked_browsers(*marks: Mark) -> list[psutil.Process]:
    """Live Chromium processes (the browser, its helpers, its crash handler) of `marks`."""
    needles = [f"{MARK_ENV}={m.value}".encode() for m in marks]
    folders = [str(m.tmp) + os.sep for m in marks]
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if not (p.info["name"] or "").startswith("chrom"):
            continue
        if any(f in arg for arg in p.info["cmdline"] or () for f in folders):
            found.append(p)
            continue
        try:
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:  # gone, or not ours to read (then not started by us)
            continue
        if any(n in env for n in needles):
            found.append(p)
    return found


def assert_no_browser_left(what: str, *marks: Mark, wait: float = 10) -> None:
    """Fail, naming them, if Chromium processes of `marks` still run after `wait` seconds (a
    stopped browser's helpers take a moment to go). They are killed first (they are this
    run's), so that one leak does not fail every later test."""
    deadline = time.monotonic() + wait
    while (left := marked_browsers(*marks)) and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = []
    for p in left:
        try:
            seen.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.Error:
            continue
    if seen:
        pytest.fail(f"Chromium left running after {what}: " + "; ".join(seen), pytrace=False)


@dataclass(frozen=True)
class Marks:
    tests: Mark  # what the tests start
    shared: Mark  # the package's shared crawl browser (crawl_browser)


@pytest.fixture(scope="package", autouse=True)
def browser_marks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marks]:
    """Mark what this package's tests start (environment; TMPDIR, in pytest's temp folder, so
    that a Prefect server started meanwhile keeps its files); when the package ends, after
    its shared browser stopped, no Chromium of either mark is left."""
    value = uuid.uuid4().hex
    marks = Marks(Mark(value, tmp_path_factory.mktemp("browser-tests")),
                  Mark(f"{value}/shared", tmp_path_factory.mktemp("browser-shared")))
    old = {k: os.environ.get(k) for k in (MARK_ENV, "TMPDIR")}
    os.environ[MARK_ENV], os.environ["TMPDIR"] = value, str(marks.tests.tmp)
    try:
        yield marks
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert_no_browser_left("the browser tests", marks.tests, marks.shared)


@pytest.fixture(autouse=True)
def no_browser_left(browser_marks: Marks, request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test (and its fixtures), no Chromium it started is running."""
    yield
    assert_no_browser_left(request.node.nodeid, browser_marks.tests)


@pytest.fixture(scope="package")
def secret() -> Iterator[SiteServer]:
    """A second local server: what the egress policy must keep the browser away from."""
    srv = SiteServer(SITE)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def public(secret: SiteServer) -> Iterator[SiteServer]:
    """The site the proxy lets through (allowed by address: it is local too); /away
    redirects to the secret server."""
    srv = SiteServer(SITE, mounts={"/browser/": PAGES},
                     redirects={"/away": f"{secret.base_url}/page1.html"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def proxy_env(public: SiteServer) -> Iterator[dict[str, str]]:
    """http_proxy & co. pointing at a real egress proxy, as the pipeline gives crawl hooks."""
    proxy = EgressProxy()
    origin = public.base_url.removeprefix("http://")
    url = proxy.url(Policy(allow_addresses=frozenset({origin})))
    yield {"http_proxy": url, "https_proxy": url, "no_proxy": ""}
    proxy.close()


@dataclass
class CrawlBrowser:
    """The running chrome daemon of a crawl folder."""

    crawl_dir: Path
    proc: subprocess.Popen[str]
    folder: Path  # its private temp folder: socket, profile

    def info(self) -> dict:
        return json.loads((self.crawl_dir / "chrome" / "browser.json").read_text())

    def stop(self) -> None:
        """What crawl cleanup does to a daemon hook: SIGTERM to its group, then SIGKILL."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_crawl_browser(crawl_dir: Path, env: dict[str, str]) -> CrawlBrowser:
    cwd = crawl_dir / "chrome"
    cwd.mkdir(parents=True, exist_ok=True)
    err = open(cwd / "daemon.stderr.log", "w")  # noqa: SIM115 - the daemon writes it
    proc = subprocess.Popen(
        [sys.executable, "-S", str(DAEMON), "--crawl-id=crawl-1"], cwd=cwd,
        env={**os.environ, "CRAWL_DIR": str(crawl_dir), **env}, stdout=subprocess.DEVNULL,
        stderr=err, text=True, start_new_session=True)
    err.close()
    deadline = time.monotonic() + 30
    info: dict = {}
    while not info.get("pid"):  # browser.json comes first, with the pid once Chromium runs
        assert proc.poll() is None, (cwd / "daemon.stderr.log").read_text()
        assert time.monotonic() < deadline, "the crawl's browser did not come up"
        time.sleep(0.05)
        if (cwd / "browser.json").exists():
            info = json.loads((cwd / "browser.json").read_text())
    return CrawlBrowser(crawl_dir, proc, Path(info["socket"]).parent)


@pytest.fixture(scope="package")
def crawl_browser(tmp_path_factory: pytest.TempPathFactory, proxy_env: dict[str, str],
                  browser_marks: Marks) -> Iterator[CrawlBrowser]:
    """One crawl's browser behind the egress proxy, shared by the tests of this package;
    after them: stopped, and nothing of it is left."""
    shared = browser_marks.shared  # it outlives the test that starts it
    browser = start_crawl_browser(tmp_path_factory.mktemp("crawl"), {
        **proxy_env, MARK_ENV: shared.value, "TMPDIR": str(shared.tmp)})
    try:
        yield browser
    finally:
        browser.stop()
    time.sleep(0.2)
    assert procs_using(browser.folder) == [], "a Chromium outlived the crawl's browser"
    assert not browser.folder.exists(), "the browser's temp folder was left"
    assert not (browser.crawl_dir / "chrome" / "browser.json").exists()


CRAWL_PLUGINS = "wget,parse_html_urls,title,screenshot,pdf,dom,singlefile"


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `archiveflow` command on the data folder `data`."""
    return subprocess.run([ARCHIVEFLOW, "--data-dir", str(data), *args], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "60"})


@pytest.fixture(scope="package")
def crawled(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
            ) -> dict[str, Any]:
    """A depth-1 crawl of the local test site through the installed command, with wget and
    every browser plugin: its data folder, its results, its crawl folder and id."""
    data = tmp_path_factory.mktemp("browser-crawl")
    proc = cli(data, "add", "--allow-private", "--depth", "1", "--plugins", CRAWL_PLUGINS,
               f"{site_url}/page1.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.url, a.plugin, a.status, a.output_str, a.output_json::VARCHAR, "
            "s.output_dir FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id"
        ).fetchall()
        crawl_id, crawl_dir = con.execute("SELECT id, output_dir FROM crawl").fetchone()
    finally:
        con.close()
    return {"data": data, "rows": rows, "crawl_dir": data / crawl_dir,
            "crawl_id": str(crawl_id), "site": site_url}
