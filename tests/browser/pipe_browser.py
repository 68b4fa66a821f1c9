"""The tests' one DevTools client: a headless Chromium driven over a pipe, as the chrome hook
drives the crawl's (its launcher and CDP client, plugins/chrome), never over a TCP port.

Chromium's remote-debugging port flag opens an unauthenticated DevTools listener on
127.0.0.1 that every local account can drive while a test runs (open any page, read local
files, fetch through the egress proxy, which admits Chromium by its uid).
`--remote-debugging-pipe` gives DevTools to the process that started Chromium and to nobody
else. tests/e2e/test_devtools_pipe_only.py fails if a test or the product passes that flag.

No pytest import and no fixtures here: tests/browser and tests/e2e both use it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
DAEMON = PLUGINS / "chrome" / "on_Crawl__05_chrome.daemon.bg.py"


def chrome_hook() -> ModuleType:
    """The chrome hook as a module: its launcher and CDP client, for the tests' own use."""
    spec = importlib.util.spec_from_file_location("chrome_hook", DAEMON)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def chromium_path() -> str | None:
    """The Chromium binary the hooks would use, if this machine has one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class PipeBrowser:
    """A headless Chromium of the test's own with a fresh profile, DevTools on a pipe. One
    tab at a time: `goto` opens it (the profile, so a login's storage, outlives the tab),
    `eval` runs in it. `with PipeBrowser() as b: b.goto(url)`."""

    def __init__(self, width: int = 1400, height: int = 2000) -> None:
        self.mod = chrome_hook()
        chromium = self.mod.find_chromium()
        if not chromium:
            raise RuntimeError("no chromium on PATH (make system-deps)")
        self.width, self.height = width, height
        self.folder = tempfile.mkdtemp(prefix="af-pipe-browser-", dir=os.environ.get("TMPDIR"))
        self.proc, self.rfd, self.wfd = self.mod.launch_chromium(chromium, self.folder)
        self.cdp = self.mod.CDP(self.rfd, self.wfd, "chromium")
        self.tab: dict | None = None
        try:
            self.cdp.call("Browser.getVersion", timeout=60)
        except BaseException:
            log = Path(self.folder, "chromium.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.close()
            raise RuntimeError(f"chromium did not start: {tail}") from None

    @property
    def command(self) -> list[str]:
        """The command line Chromium was started with."""
        return [str(a) for a in self.proc.args]

    def goto(self, url: str, timeout: float = 60) -> None:
        """Open `url` in a fresh tab (the previous one closed) and wait for its load event."""
        if self.tab:
            self.mod.close_tab(self.cdp, self.tab)
            self.tab = None
        self.tab = self.mod.open_tab(self.cdp, url, timeout, self.width, self.height)

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        """One DevTools command in the tab; its result."""
        assert self.tab is not None, "goto() first"
        result: dict = self.cdp.call(method, params, session=self.tab["session"],
                                     timeout=timeout)
        return result

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the tab (promises awaited)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        return res.get("result", {}).get("value")

    def text(self) -> str:
        """The tab's visible text."""
        return str(self.eval("document.body ? document.body.innerText : ''") or "")

    def wait_for(self, predicate: str, timeout: float = 60) -> bool:
        """Poll a JavaScript expression until it is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(predicate):
                return True
            time.sleep(0.25)
        return False

    def type_text(self, selector: str, text: str) -> None:
        """Focus an element and type into it, as a user would."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", {"text": text})

    def close(self) -> None:
        self.mod.stop_chromium(self.proc)
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.mod.remove_browser_folder(self.folder)

    def __enter__(self) -> PipeBrowser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
