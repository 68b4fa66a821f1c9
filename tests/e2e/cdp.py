"""A small client of Chromium's DevTools protocol, enough to drive the Prefect UI in tests.

Headless Chromium (Debian's `chromium`) with `--remote-debugging-port=0` prints its
websocket address on stderr; we attach to its first page and send commands over the
`websockets` package (a Prefect dependency). No browser-automation library is needed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect


def chromium_path() -> str | None:
    """The Chromium binary, if this machine has one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class Browser:
    """One headless Chromium with a fresh profile; `with Browser() as b: b.goto(url)`."""

    def __init__(self, width: int = 1400, height: int = 2000) -> None:
        binary = chromium_path()
        if binary is None:
            raise RuntimeError("no chromium on PATH")
        self._profile = Path(tempfile.mkdtemp(prefix="af-chromium-"))
        self._log = self._profile / "stderr.log"
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                 "--disable-extensions", "--remote-debugging-port=0",
                 "--remote-debugging-address=127.0.0.1", f"--window-size={width},{height}",
                 f"--user-data-dir={self._profile}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self._ws: ClientConnection | None = None
        self._id = 0
        self._connect()

    def _connect(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/",
                              self._log.read_text(errors="replace"))
            if found:
                port = found.group(1)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                            timeout=10) as resp:
                    pages = [t for t in json.load(resp) if t["type"] == "page"]
                self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None,
                                   open_timeout=20)
                self.call("Page.enable")
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("chromium did not start: " + self._log.read_text()[-2000:])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are skipped)."""
        assert self._ws is not None
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The page's visible text."""
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
        self.call("Input.insertText", text=text)

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
