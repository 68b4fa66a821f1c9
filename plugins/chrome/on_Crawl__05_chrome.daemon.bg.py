#!/usr/bin/env python3
# chrome: one headless Chromium for the whole crawl, shared by the snapshot hooks that need a
# browser (screenshot, pdf, dom, singlefile). A DAEMON crawl hook (".daemon.bg."): started
# before the crawl's snapshots, stopped (SIGTERM to its group) when the crawl is cleaned up.
#
# Inputs
#   argv  --url --crawl-id --source-url (ignored: the browser serves every snapshot)
#   env   CHROME_ENABLED, BROWSER_PLUGINS (and <PLUGIN>_ENABLED of each, and the crawl's
#         plugin list in $CRAWL_DIR/crawl.json: no browser plugin to run -> skipped, exit 10,
#         no Chromium started), CHROME_EAGER (start Chromium at once, not on the first hook's
#         call), CHROMIUM_BINARY (else chromium, chromium-browser or google-chrome on PATH),
#         CHECK_SSL_VALIDITY, http_proxy (the egress proxy, given to Chromium as
#         --proxy-server without credentials: Chromium reads no proxy variables on Linux)
# Outputs (cwd = <crawl>/chrome/)
#   browser.json: {"socket", "pid", "daemon_pid", "launches", "deaths"} while it runs; removed
#   when it stops. Snapshot hooks find it as $CRAWL_DIR/chrome/browser.json.
#   stdout: nothing while it serves; a skipped/failed ArchiveResult if it cannot.
# How: Chromium speaks the DevTools Protocol on a pipe (--remote-debugging-pipe), never on a
# TCP port, which any local account could reach. This hook relays it on a Unix socket in a
# private 0700 temp folder, for processes of our own uid only (SO_PEERCRED): each hook opens
# its own tab(s); a hook that hangs up has its tabs closed. Chromium runs in its own process
# group with its profile in that folder; a Chromium that dies is replaced on the next call
# (the calls in flight fail with the reason), at most MAX_DEATHS times. On SIGTERM, or when
# the process that started it is gone, the group is killed and the folder and browser.json
# are removed.
from __future__ import annotations

import json
import os
import queue
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "archiveflow-chrome-"
SOCKET = "cdp.sock"
INFO = os.path.abspath("browser.json")
MAX_DEATHS = 5
REFUSED = frozenset({"Browser.close", "Browser.crash"})  # the crawl's browser, not a hook's
STOPPING = False
DEFAULT_USERS = "screenshot,pdf,dom,singlefile"
# Calls that carry no tab state: when Chromium dies under them, they go to its replacement.
RETRIED = frozenset({"Target.createTarget", "Browser.getVersion", "Target.getTargets"})
LAUNCHES: queue.Queue = queue.Queue()


# ---- shared by the crawl and snapshot hooks (tests/plugins/test_shared_code.py) ----
EGRESS_HEADER = "X-Archiveflow-Egress"


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for a in argv:
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            args[key.replace("-", "_")] = val if eq else "true"
    return args


def emit(record: dict) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


def env_bool(name: str, default: bool) -> bool:
    val = os.environ.get(name)
    if val is None or val.strip() == "":
        return default
    return val.strip().lower() in ("1", "true", "yes", "on", "y")


def env_int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name, "") or default))
    except ValueError:
        return default


def http_url(url: str) -> str:
    """The URL as a browser sends it: non-ASCII and spaces percent-encoded as UTF-8
    (urllib sends the request line as ASCII and fails on `/Köln` otherwise)."""
    from urllib.parse import quote

    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def egress_failure(answer: object) -> str | None:
    """The egress proxy's reason when it, not the server, answered this request (an HTTPError
    whose headers carry X-Archiveflow-Egress: refused or unreachable), else None.

    Every crawl hook is pointed at archiveflow's egress proxy (http_proxy/https_proxy): it
    refuses private-network targets, also after redirects (403), and answers 502 when the
    server cannot be reached. Neither is the page's answer.
    """
    headers = getattr(answer, "headers", None)
    if headers is None or not headers.get(EGRESS_HEADER, "").strip():
        return None
    try:
        body = answer.read(2000).decode("utf-8", "replace").strip()  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        body = ""
    return body or f"archiveflow egress: {headers.get(EGRESS_HEADER, '').strip()}"
# ---- end of shared part ----


# ---- shared by the hooks that drive the browser (tests/plugins/test_shared_code.py) ----
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_INFO = os.path.join("chrome", "browser.json")  # under CRAWL_DIR, see plugins/chrome
BROWSER_DAEMON = "on_Crawl__05_chrome.daemon.bg"
_OWN_BROWSERS: list = []  # (process, temp folder) of a Chromium this hook started itself


class BrowserError(Exception):
    """The browser cannot be used: missing, did not start, died, or stopped answering."""


class PageError(Exception):
    """The page did not load: a network error, or the egress proxy answered instead."""


def find_chromium() -> str | None:
    configured = os.environ.get("CHROMIUM_BINARY", "").strip()
    for name in ([configured] if configured else []) + list(CHROMIUM_NAMES):
        path = name if os.sep in name else shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path
    return None


def proxy_server() -> str | None:
    """scheme://host:port of the proxy named by http_proxy, credentials left out (Chromium
    takes none in --proxy-server; the egress proxy admits it by the uid of its socket)."""
    from urllib.parse import urlsplit

    raw = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY") or ""
    try:
        parts = urlsplit(raw)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or not port:
        return None
    return f"{parts.scheme or 'http'}://{host}:{port}"


def chromium_command(chromium: str, profile: str) -> list[str]:
    """Headless Chromium with DevTools on fds 3 (in) and 4 (out), no TCP port: a port on
    127.0.0.1 would let any local account drive the browser, and through it the proxy."""
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--remote-debugging-pipe", f"--user-data-dir={profile}",
    ]
    if not env_bool("CHECK_SSL_VALIDITY", True):
        cmd.append("--ignore-certificate-errors")
    proxy = proxy_server()
    if proxy:
        # <-loopback>: Chromium otherwise never sends localhost and 127.0.0.1 to a proxy.
        cmd += [f"--proxy-server={proxy}", "--proxy-bypass-list=<-loopback>"]
    return [*cmd, "about:blank"]


def socket_tmp() -> str:
    """TMPDIR for Chromium: it puts a socket there, and a Unix socket path has at most 107
    bytes; in a deep TMPDIR (a test's, say) Chromium exits at once, so /tmp then."""
    import tempfile

    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 60 else "/tmp"


def launch_chromium(chromium: str, folder: str) -> tuple[subprocess.Popen, int, int]:
    """Start Chromium with its profile in `folder`, in its own process group, killed if we
    die; returns (process, fd to read its messages, fd to write ours)."""
    import ctypes
    import fcntl

    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def child() -> None:
        # Chromium reads DevTools messages on fd 3 and writes on 4. Our pipes are moved
        # above 9 first so that dup2 cannot overwrite one with the other.
        a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)
        os.close(a)
        os.close(b)
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PDEATHSIG
        except (OSError, AttributeError):
            pass

    log = open(os.path.join(folder, "chromium.log"), "wb")  # noqa: SIM115
    try:
        # close_fds=False: fds Python opened are close-on-exec anyway (PEP 446); only 0-4
        # reach Chromium.
        proc = subprocess.Popen(
            chromium_command(chromium, os.path.join(folder, "profile")),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=False,
            start_new_session=True, preexec_fn=child,
            env=dict(os.environ, DBUS_SESSION_BUS_ADDRESS="disabled:", TMPDIR=socket_tmp()))
    finally:
        log.close()
        os.close(to_r)
        os.close(from_w)
    return proc, from_r, to_w


def remove_browser_folder(folder: str) -> None:
    """Remove a stopped Chromium's folder and the socket folder it made in TMPDIR (linked
    from the profile; not moved into our folder, whose path may be too long for a socket)."""
    for name in ("SingletonSocket", "SingletonCookie"):
        try:
            target = os.path.dirname(os.readlink(os.path.join(folder, "profile", name)))
        except OSError:
            continue
        if os.path.basename(target).startswith("org.chromium.Chromium."):
            shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)


def stop_chromium(proc: subprocess.Popen) -> None:
    """Kill Chromium's whole process group (browser, zygote, renderers, GPU)."""
    for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()


class CDP:
    """A DevTools Protocol connection: JSON messages, each ended by a NUL byte, on a read
    and a write fd (a pipe pair to our own Chromium, or one Unix socket to the crawl's)."""

    def __init__(self, rfd: int, wfd: int, what: str) -> None:
        self.rfd, self.wfd, self.what = rfd, wfd, what
        self.buf = bytearray()
        self.next_id = 0
        self.events: list = []
        self.keep: set = set()  # event methods kept for wait_event; others are dropped

    def send(self, msg: dict) -> None:
        data = memoryview(json.dumps(msg).encode() + b"\0")
        while data:
            try:
                data = data[os.write(self.wfd, data):]
            except OSError as e:
                raise BrowserError(f"{self.what}: {e.strerror or e}") from None

    def receive(self, deadline: float) -> dict | None:
        """The next message, or None at the deadline."""
        while True:
            end = self.buf.find(b"\0")
            if end >= 0:
                raw = bytes(self.buf[:end])
                del self.buf[: end + 1]
                return json.loads(raw)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([self.rfd], [], [], left)[0]:
                continue
            try:
                chunk = os.read(self.rfd, 1 << 20)
            except OSError as e:
                raise BrowserError(f"{self.what}: {e.strerror or e}") from None
            if not chunk:
                raise BrowserError(f"{self.what} closed the connection")
            self.buf += chunk

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            m = self.receive(deadline)
            if m is None:
                raise BrowserError(f"{method}: no answer from {self.what} within {timeout:g}s")
            if m.get("id") == msg["id"]:
                if "error" in m:
                    raise BrowserError(f"{method}: {(m['error'] or {}).get('message')}")
                return m.get("result") or {}
            if m.get("method") in self.keep:
                self.events.append(m)

    def wait_event(self, method: str, session: str | None, timeout: float) -> dict | None:
        """The first kept event `method` of `session` (queued or new), None at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self.events.pop(i)
            m = self.receive(deadline)
            if m is None:
                return None
            if m.get("method") in self.keep:
                self.events.append(m)


def connect_browser(wait: float = 30.0) -> tuple[CDP, object, str]:
    """(connection, close function, "crawl" or "own"): the crawl's browser when
    plugins/chrome runs one for this crawl (its browser.json under CRAWL_DIR), else a
    Chromium of our own, stopped by the close function (or by release_browsers)."""
    import socket

    crawl_dir = os.environ.get("CRAWL_DIR", "")
    info = os.path.join(crawl_dir, BROWSER_INFO)
    daemon = os.path.join(crawl_dir, "chrome", BROWSER_DAEMON + ".pid")
    deadline = time.monotonic() + wait
    while crawl_dir and not os.path.exists(info) and time.monotonic() < deadline:
        try:  # the runner's pid file of the crawl's daemon: is it still starting?
            with open(daemon, encoding="utf-8") as f:
                os.kill(int(json.load(f)["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            break  # no daemon, or it ended (skipped, failed): no crawl browser coming
        time.sleep(0.05)
    why = "no crawl browser"
    if crawl_dir and os.path.exists(info):
        try:
            with open(info, encoding="utf-8") as f:
                path = json.load(f)["socket"]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            return CDP(sock.fileno(), sock.fileno(), "the crawl's browser"), sock.close, "crawl"
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = f"crawl browser unreachable ({e})"
            print(f"{why}: starting a Chromium of our own", file=sys.stderr, flush=True)
    chromium = find_chromium()
    if not chromium:
        raise BrowserError("chromium not found: run archiveflow install")
    import tempfile

    folder = tempfile.mkdtemp(prefix="archiveflow-chrome-")
    proc, rfd, wfd = launch_chromium(chromium, folder)
    own = (proc, folder)
    _OWN_BROWSERS.append(own)

    def close() -> None:
        stop_chromium(proc)
        for fd in (rfd, wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        remove_browser_folder(folder)
        if own in _OWN_BROWSERS:
            _OWN_BROWSERS.remove(own)

    cdp = CDP(rfd, wfd, "chromium")
    try:
        cdp.call("Browser.getVersion", timeout=30)
    except BrowserError as e:
        try:
            with open(os.path.join(folder, "chromium.log"), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            # Chromium logs harmless noise (cpufreq, dbus) before the line that matters.
            tail = " | ".join([ln for ln in lines if "cpufreq" not in ln
                               and "dbus" not in ln][-2:])[-400:]
        except OSError:
            tail = ""
        close()
        raise BrowserError(f"chromium did not start ({e}; {why}): {tail}") from None
    return cdp, close, "own"


def release_browsers() -> None:
    """Stop every Chromium this hook started (on a signal: the runner's timeout or stop)."""
    for proc, folder in list(_OWN_BROWSERS):
        stop_chromium(proc)
        remove_browser_folder(folder)
    _OWN_BROWSERS.clear()


def open_tab(cdp: CDP, url: str, timeout: float, width: int, height: int,
             keep: tuple = ()) -> dict:
    """Open `url` in a new tab of the given viewport and wait for its load event (at most
    `timeout` s; a page still loading then is used as it is). Returns the tab: session,
    target, HTTP status, final URL, mime type, loaded. Raises PageError when the page did not
    load or the egress proxy answered instead of it; the tab is closed then."""
    cdp.keep = {"Page.loadEventFired", "Network.responseReceived", *keep}
    target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    tab: dict = {"target": target, "session": None}
    try:
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        tab["session"] = session
        for method in ("Page.enable", "Network.enable"):
            cdp.call(method, session=session)
        cdp.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session)
        ua = os.environ.get("USER_AGENT")
        if ua:
            cdp.call("Network.setUserAgentOverride", {"userAgent": ua}, session=session)
        cdp.events.clear()
        deadline = time.monotonic() + timeout  # for the navigation and the load together
        nav = cdp.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
        loaded = False
        if not nav.get("errorText"):
            left = max(0.0, deadline - time.monotonic())
            loaded = cdp.wait_event("Page.loadEventFired", session, left) is not None
        docs = [e["params"] for e in cdp.events
                if e.get("method") == "Network.responseReceived" and e.get("sessionId") == session
                and e["params"].get("type") == "Document"
                and e["params"].get("frameId") == nav.get("frameId")]
        response = docs[-1]["response"] if docs else {}
        headers = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        egress = headers.get(EGRESS_HEADER.lower(), "").strip()
        if egress:  # the proxy answered (a refusal, or a server it could not reach)
            raise PageError(f"{url}: " + (headers.get(f"{EGRESS_HEADER.lower()}-reason")
                                          or f"archiveflow egress: {egress}"))
        if nav.get("errorText"):
            raise PageError(f"{url}: {nav['errorText']}")
        tab.update(status=response.get("status"), url=response.get("url") or url,
                   mime=response.get("mimeType"), loaded=loaded)
        return tab
    except BaseException:
        close_tab(cdp, tab)
        raise


def close_tab(cdp: CDP, tab: dict) -> None:
    try:
        cdp.call("Target.closeTarget", {"targetId": tab["target"]}, timeout=5)
    except BrowserError:
        pass  # the browser is gone, and the tab with it
# ---- end of shared part ----


class Client:
    """One connected hook: the tabs it created, a lock so that replies do not interleave."""

    def __init__(self, conn) -> None:
        self.conn = conn
        # A hook that stops reading must not stall the relay for every other hook: a send
        # blocked this long fails, and that hook is dropped (its tabs closed).
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 30, 0))
        self.targets: set = set()
        self.lock = threading.Lock()

    def send(self, msg: dict) -> None:
        data = json.dumps(msg).encode() + b"\0"
        with self.lock:
            try:
                self.conn.sendall(data)
            except OSError:
                # Gone or not reading: hang up, so that its thread releases it.
                try:
                    self.conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Relay:
    """Chromium on a pipe, shared by many hooks: each hook's message ids are renumbered on
    the way in and restored on the way out; a tab's events go to the hook that attached to it.
    A Chromium that died is replaced on the next message (at most MAX_DEATHS times)."""

    def __init__(self, chromium: str, folder: str) -> None:
        self.chromium, self.folder = chromium, folder
        self.lock = threading.Lock()  # the maps and the browser's life
        self.write_lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.wfd = -1
        self.launches = 0
        self.deaths: list = []
        self.next_id = 0
        # our id -> (client or None, the client's id, method, the Chromium it went to, params)
        self.pending: dict = {}
        self.sessions: dict = {}  # sessionId -> client

    def info(self) -> dict:
        proc = self.proc
        return {"socket": os.path.join(self.folder, SOCKET), "pid": proc.pid if proc else None,
                "daemon_pid": os.getpid(), "launches": self.launches, "deaths": self.deaths}

    def ensure(self) -> str | None:
        """Start Chromium unless it runs; the reason when it cannot."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return None
            if len(self.deaths) >= MAX_DEATHS:
                return f"chromium died {len(self.deaths)} times, last: {self.deaths[-1]}"
            self.launches += 1
            folder = os.path.join(self.folder, f"run{self.launches}")
            os.mkdir(folder, 0o700)
            try:
                proc, rfd, wfd = self.launch(folder)
            except OSError as e:
                self.deaths.append(f"did not start: {e}")
                return f"chromium did not start: {e}"
            self.proc, self.wfd = proc, wfd
            threading.Thread(target=self.read, args=(proc, rfd, wfd, folder), daemon=True).start()
        write_info(self.info())
        return None

    def launch(self, folder: str) -> tuple:
        """launch_chromium, from the one thread that lives as long as we do: the kernel's
        parent-death signal (which kills Chromium if we are SIGKILLed) fires when the
        *thread* that started it ends, and the thread of a hook's connection ends with it."""
        done: list = []
        ready = threading.Event()
        LAUNCHES.put((folder, done, ready))
        ready.wait()
        if isinstance(done[0], BaseException):
            raise done[0]
        return done[0]

    def forward(self, client: Client | None, msg: dict) -> None:
        reason = self.ensure()
        if reason is not None:
            if client is not None:
                client.send({"id": msg.get("id"), "error": {"message": reason}})
            return
        with self.lock:
            self.next_id += 1
            self.pending[self.next_id] = (client, msg.get("id"), msg.get("method"), self.proc,
                                          msg.get("params"))
            msg = {**msg, "id": self.next_id}
            wfd = self.wfd
        data = memoryview(json.dumps(msg).encode() + b"\0")
        with self.write_lock:
            try:
                while data:
                    data = data[os.write(wfd, data):]
            except OSError:
                pass  # Chromium is gone: its reader answers every pending call with why

    def dispatch(self, msg: dict) -> None:
        if "id" in msg:
            with self.lock:
                client, their_id, method, _, _ = self.pending.pop(msg["id"], (None,) * 5)
                result = msg.get("result") or {}
                if client is not None and method == "Target.attachToTarget":
                    if result.get("sessionId"):
                        self.sessions[result["sessionId"]] = client
                if client is not None and method == "Target.createTarget":
                    if result.get("targetId"):
                        client.targets.add(result["targetId"])
            if client is not None:
                client.send({**msg, "id": their_id})
            return
        if msg.get("method") == "Target.detachedFromTarget":
            with self.lock:
                self.sessions.pop((msg.get("params") or {}).get("sessionId"), None)
        client = self.sessions.get(msg.get("sessionId") or "")
        if client is not None:
            client.send(msg)

    def read(self, proc: subprocess.Popen, rfd: int, wfd: int, folder: str) -> None:
        buf = bytearray()
        while True:
            try:
                chunk = os.read(rfd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while (end := buf.find(b"\0")) >= 0:
                raw = bytes(buf[:end])
                del buf[: end + 1]
                try:
                    self.dispatch(json.loads(raw))
                except ValueError:
                    continue
        self.died(proc, rfd, wfd, folder)

    def died(self, proc: subprocess.Popen, rfd: int, wfd: int, folder: str) -> None:
        stop_chromium(proc)  # its pipe closed: whatever is left of it goes
        rc = proc.returncode
        why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exited {rc}"
        with self.lock:
            if self.proc is proc:
                self.proc = None
                self.deaths.append(f"chromium {why}")
            # Only its own calls: a replacement may already be serving others.
            lost = [k for k, v in self.pending.items() if v[3] is proc]
            lost_calls = [self.pending.pop(k) for k in lost]
            if self.proc is None:
                self.sessions.clear()
        for fd in (rfd, wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        remove_browser_folder(folder)
        for client, their_id, method, _proc, params in lost_calls:
            if client is not None and method in RETRIED and not STOPPING:
                # Nothing of this call reached a tab yet: the replacement answers it.
                self.forward(client, {"id": their_id, "method": method, "params": params})
            elif client is not None:
                client.send({"id": their_id, "error": {
                    "message": f"the crawl's browser died (chromium {why}); the next hook "
                               "that needs it gets a fresh one"}})
        if not STOPPING:
            print(f"chromium {why}", file=sys.stderr, flush=True)

    def serve(self, conn) -> None:
        client = Client(conn)
        buf = bytearray()
        try:
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while (end := buf.find(b"\0")) >= 0:
                    raw = bytes(buf[:end])
                    del buf[: end + 1]
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and msg.get("method") not in REFUSED:
                        self.forward(client, msg)
                    elif isinstance(msg, dict):
                        client.send({"id": msg.get("id"), "error": {
                            "message": f"{msg.get('method')} is the crawl's, not a hook's"}})
        except OSError:
            pass
        finally:
            self.release(client)
            conn.close()

    def release(self, client: Client) -> None:
        """A hook hung up: close the tabs it left open (it may have been killed)."""
        with self.lock:
            for sid in [s for s, c in self.sessions.items() if c is client]:
                del self.sessions[sid]
            for key, (c, their_id, method, proc, params) in list(self.pending.items()):
                if c is client:
                    self.pending[key] = (None, their_id, method, proc, params)
            alive = self.proc is not None and self.proc.poll() is None
        if alive:
            for target in client.targets:
                self.forward(None, {"method": "Target.closeTarget",
                                    "params": {"targetId": target}})

    def stop(self) -> None:
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is not None:
            stop_chromium(proc)
            remove_browser_folder(os.path.join(self.folder, f"run{self.launches}"))


def launcher(chromium: str) -> None:
    """The thread that starts every Chromium (see Relay.launch)."""
    while True:
        folder, done, ready = LAUNCHES.get()
        try:
            done.append(launch_chromium(chromium, folder))
        except OSError as e:
            done.append(e)
        ready.set()


def watch_parent() -> None:
    """Stop when the process that started us is gone (killed with SIGKILL, say, before it
    could clean up its crawl): a browser nobody will stop must not live on."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def write_info(info: dict) -> None:
    tmp = INFO + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, INFO)


def same_user(conn) -> bool:
    """Only processes of our own account may use the browser (the folder is 0700 too)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def remove_stale() -> None:
    """A daemon killed with SIGKILL (crawl resumed after a crash) left its folder: remove it."""
    try:
        with open(INFO, encoding="utf-8") as f:
            old = os.path.dirname(json.load(f)["socket"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if os.path.basename(old).startswith(PREFIX) and os.path.isdir(old):
        shutil.rmtree(old, ignore_errors=True)


def browser_users() -> list:
    """The browser plugins this crawl will run: BROWSER_PLUGINS (default: ours), less those
    switched off (<PLUGIN>_ENABLED) or left out of the crawl's plugin list (crawl.json)."""
    names = os.environ.get("BROWSER_PLUGINS") or DEFAULT_USERS
    wanted = [n.strip() for n in names.split(",") if n.strip() and n.strip() != "chrome"]
    try:
        with open(os.path.join(os.environ.get("CRAWL_DIR", ""), "crawl.json"),
                  encoding="utf-8") as f:
            chosen = json.load(f).get("plugins") or ""
    except (OSError, ValueError, AttributeError):
        chosen = ""
    if chosen:
        picked = {p.strip() for p in chosen.split(",")}
        wanted = [n for n in wanted if n in picked]
    key = lambda n: re.sub(r"[^A-Za-z0-9]", "_", n).upper() + "_ENABLED"  # noqa: E731
    return [n for n in wanted if env_bool(key(n), True)]


def on_signal(signum: int, _frame: object) -> None:
    global STOPPING
    STOPPING = True
    raise SystemExit(0)


def main() -> int:
    parse_args(sys.argv[1:])
    if not env_bool("CHROME_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped", "output_str": "CHROME_ENABLED=False"})
        return 10
    if not browser_users():
        # Crawl hooks run whatever plugins a crawl picked: no Chromium for a crawl without
        # a browser plugin.
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": "no browser plugin in this crawl"})
        return 10
    chromium = find_chromium()
    if not chromium:
        emit({"type": "ArchiveResult", "status": "failed",
              "output_str": "chromium not found: run archiveflow install"})
        return 1
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    remove_stale()
    folder = tempfile.mkdtemp(prefix=PREFIX)  # 0700: only this account gets in
    relay = Relay(chromium, folder)
    threading.Thread(target=launcher, args=(chromium,), daemon=True).start()
    threading.Thread(target=watch_parent, daemon=True).start()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(os.path.join(folder, SOCKET))
        server.listen(64)
        write_info(relay.info())  # first: hooks may connect while Chromium starts
        if env_bool("CHROME_EAGER", True):
            relay.ensure()  # the first snapshot hook then finds the browser up
        print(f"serving chromium {relay.info()['pid']} for the crawl from {folder}",
              file=sys.stderr, flush=True)
        while True:
            conn, _ = server.accept()
            if not same_user(conn):
                conn.close()
                continue
            threading.Thread(target=relay.serve, args=(conn,), daemon=True).start()
    finally:
        server.close()
        relay.stop()
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.remove(INFO)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
