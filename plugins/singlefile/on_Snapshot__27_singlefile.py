#!/usr/bin/env python3
# singlefile: the page as ONE self-contained HTML file: the DOM after load, with its
# stylesheets, images, icons and fonts inlined (CSS as <style>, the rest as data: URIs) and
# its scripts removed, so it opens offline in any browser.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   SINGLEFILE_ENABLED, SINGLEFILE_TIMEOUT (seconds), SINGLEFILE_VIEWPORT
#         ("1280,900"), SINGLEFILE_MAX_RESOURCE_BYTES (bigger resources stay links),
#         CRAWL_DIR (the crawl's shared browser: $CRAWL_DIR/chrome/browser.json, see
#         plugins/chrome; without one a Chromium of its own is started and stopped),
#         CHROMIUM_BINARY, CHECK_SSL_VALIDITY, USER_AGENT, http_proxy (the egress proxy)
# Outputs (cwd = <snapshot>/singlefile/)
#   singlefile.html (UTF-8)
#   stdout: one ArchiveResult, output_str "singlefile/singlefile.html"; output_json counts
#   inlined resources and those left as links.
# The resources are the ones the browser loaded for the page (Network.getResponseBody): no
# second fetch, and nothing the egress proxy refused (those stay links, counted as skipped).
# Why not ArchiveBox's single-file-cli (npm): it drives a browser only over a TCP DevTools
# endpoint with no authentication, and fetches what the page could not from Node, past the
# egress proxy and from file:// on the local disk (docs/browser.md). This uses the crawl's
# browser. It keeps less than single-file-cli (no frames, no lazy images loaded by
# scrolling, no @import chains).
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

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


def write_file(name: str, data: bytes) -> None:
    """All or nothing: a hook killed while writing leaves no half file for the index."""
    with open(name + ".part", "wb") as f:
        f.write(data)
    os.replace(name + ".part", name)


PLUGIN, DIR, SIZE_KEY = "SINGLEFILE", "singlefile", "VIEWPORT"
KEEP: tuple = ()
INLINE = r"""((res) => {
  const css = (text, base) => text.replace(/url\(\s*(['"]?)([^'")]+)\1\s*\)/g, (m, q, u) => {
    try { const abs = new URL(u, base).href; return res[abs] ? 'url("' + res[abs].uri + '")' : m; }
    catch (e) { return m; }
  });
  const root = document.documentElement.cloneNode(true);
  root.querySelectorAll('script, noscript, base, meta[charset], meta[http-equiv]').forEach(
    e => e.remove());
  root.querySelectorAll(
    'link[rel~="preload"], link[rel~="modulepreload"], link[rel~="prefetch"]').forEach(
    e => e.remove());
  let inlined = 0, left = 0;
  root.querySelectorAll('link[rel~="stylesheet"]').forEach(e => {
    const r = res[e.href];
    if (r && r.css !== undefined) {
      const s = document.createElement('style');
      if (e.media) s.media = e.media;
      s.textContent = r.css; e.replaceWith(s); inlined++;
    } else { left++; }
  });
  const base = document.baseURI;
  root.querySelectorAll('style').forEach(s => { s.textContent = css(s.textContent, base); });
  root.querySelectorAll('[style]').forEach(
    e => e.setAttribute('style', css(e.getAttribute('style'), base)));
  const media = 'img[src], input[type=image][src], video[poster], source[src], link[rel~="icon"]';
  root.querySelectorAll(media).forEach(e => {
    const attr = e.hasAttribute('poster') ? 'poster' : (e.tagName === 'LINK' ? 'href' : 'src');
    const abs = e.tagName === 'LINK' ? e.href : (attr === 'poster' ? e.poster : e.src);
    const r = res[abs];
    if (r) { e.setAttribute(attr, r.uri); e.removeAttribute('srcset'); inlined++; } else { left++; }
  });
  root.querySelectorAll('a[href]').forEach(a => a.setAttribute('href', a.href));
  const meta = document.createElement('meta'); meta.setAttribute('charset', 'utf-8');
  const head = root.querySelector('head'); if (head) head.prepend(meta);
  const d = document.doctype;
  return JSON.stringify({html: (d ? '<!DOCTYPE ' + d.name + '>\n' : '') + root.outerHTML,
                         inlined: inlined, left: left});
})"""


def resources(cdp: CDP, tab: dict, timeout: float) -> tuple[dict, int]:
    """URL -> {"uri": data: URI, "css": text for stylesheets} of what the tab loaded, and how
    many it could not keep (refused, failed, too big)."""
    from urllib.parse import urljoin

    limit = env_int("SINGLEFILE_MAX_RESOURCE_BYTES", 5 * 1024 * 1024)
    deadline = time.monotonic() + timeout
    found: dict = {}
    skipped = 0
    for ev in cdp.events:
        p = ev.get("params") or {}
        r = p.get("response") or {}
        if (ev.get("method") != "Network.responseReceived" or ev.get("sessionId") != tab["session"]
                or p.get("type") == "Document" or r.get("url", "").startswith("data:")):
            continue
        headers = {str(k).lower() for k in (r.get("headers") or {})}
        if r.get("status") != 200 or EGRESS_HEADER.lower() in headers:
            skipped += 1
            continue
        try:
            body = cdp.call("Network.getResponseBody", {"requestId": p["requestId"]},
                            session=tab["session"], timeout=max(1.0, deadline - time.monotonic()))
        except BrowserError:
            skipped += 1
            continue
        raw = (base64.b64decode(body["body"]) if body.get("base64Encoded")
               else body.get("body", "").encode("utf-8"))
        if len(raw) > limit:
            skipped += 1
            continue
        mime = (r.get("mimeType") or "application/octet-stream").split(";")[0]
        found[r["url"]] = {"mime": mime, "raw": raw}
    out: dict = {}
    for url, res in found.items():  # stylesheets last: their url()s point at the others
        if res["mime"] != "text/css":
            out[url] = {"uri": f"data:{res['mime']};base64,"
                               + base64.b64encode(res["raw"]).decode("ascii")}
    for url, res in found.items():
        if res["mime"] == "text/css":
            text = res["raw"].decode("utf-8", "replace")

            def inline(m: re.Match, base: str = url) -> str:
                hit = out.get(urljoin(base, m.group(2)))
                return f'url("{hit["uri"]}")' if hit else m.group(0)

            text = re.sub(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)""", inline, text)
            out[url] = {"css": text, "uri": "data:text/css;base64,"
                        + base64.b64encode(text.encode("utf-8")).decode("ascii")}
    return out, skipped


def save(cdp: CDP, tab: dict, timeout: float) -> tuple[str, dict]:
    res, skipped = resources(cdp, tab, timeout / 2)
    got = cdp.call("Runtime.evaluate", {"expression": f"{INLINE}({json.dumps(res)})",
                                        "returnByValue": True},
                   session=tab["session"], timeout=timeout / 2)
    if "exceptionDetails" in got:
        raise BrowserError(f"inlining failed: {got['exceptionDetails'].get('text')}")
    page = json.loads(got["result"]["value"])
    write_file("singlefile.html", page["html"].encode("utf-8", "replace"))
    return "singlefile.html", {"inlined": page["inlined"], "left_as_links": page["left"],
                               "resources_skipped": skipped}


def fail(msg: str, code: int = 1) -> int:
    emit({"type": "ArchiveResult", "status": "failed", "output_str": msg[:300], "error": msg})
    return code


def on_signal(signum: int, _frame: object) -> None:
    release_browsers()
    fail(f"interrupted (signal {signum})")
    os._exit(1)


def viewport(name: str, default: str) -> tuple[int, int]:
    raw = os.environ.get(name) or default
    try:
        width, height = (int(v) for v in raw.replace("x", ",").split(","))
    except ValueError:
        width, height = (int(v) for v in default.split(","))
    return max(100, width), max(100, height)


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool(f"{PLUGIN}_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": f"{PLUGIN}_ENABLED=False"})
        return 10
    if not re.match(r"^(https?|file)://", url):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": f"not an http(s) URL: {url[:100]}"})
        return 10
    timeout = env_int(f"{PLUGIN}_TIMEOUT", env_int("TIMEOUT", 60))
    width, height = viewport(f"{PLUGIN}_{SIZE_KEY}", "1280,900")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        cdp, close, which = connect_browser()
    except BrowserError as e:
        return fail(str(e))
    try:
        # Most of the budget for the page; the rest to save it and report before the runner's
        # own timeout kills us without a word.
        tab = open_tab(cdp, url, max(5.0, timeout * 0.7), width, height, KEEP)
        try:
            out, extra = save(cdp, tab, max(5.0, timeout * 0.2))
        finally:
            close_tab(cdp, tab)
    except (BrowserError, PageError) as e:
        return fail(str(e))
    finally:
        close()
    emit({"type": "ArchiveResult", "status": "succeeded", "output_str": f"{DIR}/{out}",
          "output_json": {"bytes": os.path.getsize(out), "viewport": f"{width},{height}",
                          "browser": which, "status": tab.get("status"),
                          "loaded": tab.get("loaded"), "seconds": round(time.monotonic()
                                                                          - started, 3),
                          **extra}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
