"""The Prefect UI, as a user opens it in a browser after `archiveflow add` (headless Chromium).

The browser logs in with the password `archiveflow server login` prints, through the UI's own
login form, opens the runs page the CLI names, and must show the crawl's flow run by name
(not "Can't connect to Server API"); the flow run's page lists its task runs (the Snapshot).
The browser is driven over a pipe (tests/browser/pipe_browser.py), so no DevTools port is open
to other local accounts while it holds the UI's login: it listens on no TCP port at all.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.browser.pipe_browser import PipeBrowser, chromium_path
from tests.e2e.conftest import af, api, secret, status

pytestmark = [pytest.mark.timeout(400),
              pytest.mark.skipif(chromium_path() is None, reason="needs chromium")]

CANT_CONNECT = "Can't connect to Server API"


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, local_env: dict[str, str],
            site_url: str) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("ui") / "data"
    add = af(data, "add", "--allow-private", "--plugins", "title", f"{site_url}/page1.html",
             env=local_env)
    assert add.returncode == 0, add.stderr
    crawl_id = re.search(r"crawl (\S+) queued", add.stderr)
    assert crawl_id, add.stderr
    st = status(data, local_env)
    assert st["running"], st
    yield {"data": data, "add": add, "crawl_id": crawl_id.group(1), **st}
    af(data, "server", "stop", "--force", env=local_env, timeout=60)


def _login(browser: PipeBrowser, page: str, password: str) -> None:
    browser.goto(page)
    assert browser.wait_for("!!document.querySelector('input[type=password]')", 60), \
        browser.text()[:2000]
    browser.type_text("input[type=password]", password)
    browser.eval("document.querySelector('form button[type=submit]').click()")


def test_runs_page_shows_the_crawls_flow_run(crawled: dict[str, Any]) -> None:
    from archiveflow.flows.prefect_server import runs_page

    run_name = f"crawl {crawled['crawl_id']}"
    page = runs_page(crawled["ui_url"])
    assert page.startswith(crawled["ui_url"])
    with PipeBrowser() as browser:
        _login(browser, page, secret(crawled["data"]))
        seen = browser.wait_for(f"document.body.innerText.includes({run_name!r})", 90)
        text = browser.text()
        assert seen, text[:3000]
        assert CANT_CONNECT not in text
        assert "Authentication failed" not in text
        assert browser.eval("location.pathname").endswith("/runs")
        assert _tcp_listeners(browser) == [], "Chromium listens on TCP"


def _tcp_listeners(browser: PipeBrowser) -> list[str]:
    """TCP sockets listening in the browser's process group (browser, zygotes, renderers,
    network service): a DevTools port would be one."""
    assert "--remote-debugging-pipe" in browser.command, browser.command
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) != browser.proc.pid:
                continue
            found += [f"{p.pid} {p.name()} {c.laddr}" for c in p.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN]
        except (OSError, psutil.Error):
            continue
    return found


def test_flow_run_page_lists_its_task_runs(crawled: dict[str, Any]) -> None:
    from archiveflow.flows.prefect_server import runs_page

    run_name = f"crawl {crawled['crawl_id']}"
    code, runs, _ = api(f"{crawled['api_url']}/flow_runs/filter", auth=secret(crawled["data"]),
                        body={"flow_runs": {"name": {"any_": [run_name]}}})
    assert code == 200 and len(runs) == 1, runs
    deadline = time.monotonic() + 60
    tasks: list[dict[str, Any]] = []
    while not tasks and time.monotonic() < deadline:  # the server records them from events
        code, tasks, _ = api(f"{crawled['api_url']}/task_runs/filter",
                             auth=secret(crawled["data"]),
                             body={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}})
        assert code == 200, tasks
        time.sleep(0.5)
    assert tasks, f"no task run of {run_name} recorded"
    with PipeBrowser() as browser:
        _login(browser, runs_page(crawled["ui_url"]), secret(crawled["data"]))
        assert browser.wait_for(f"document.body.innerText.includes({run_name!r})", 90)
        # the flow run's page, on its "Task Runs" tab
        browser.goto(f"{runs_page(crawled['ui_url'])}/flow-run/{runs[0]['id']}?tab=TaskRuns")
        assert browser.wait_for(f"document.body.innerText.includes({run_name!r})", 60)
        names = sorted({t["name"] for t in tasks})
        shown = browser.wait_for(" && ".join(
            f"document.body.innerText.includes({n!r})" for n in names), 60)
        assert shown, (names, browser.text()[:3000])
        assert CANT_CONNECT not in browser.text()


def test_add_says_why_it_waits_and_where_the_ui_is(crawled: dict[str, Any]) -> None:
    err = crawled["add"].stderr
    assert "starting the local Prefect server for " in err, err
    assert f"Prefect UI: {crawled['ui_url']}v2/runs (log in: `archiveflow server login`)" \
        in err, err
