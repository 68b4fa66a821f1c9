#!/usr/bin/env python3
# screenshot: a PNG of the page as headless Chromium renders it. A BACKGROUND hook (".bg."):
# the runner starts it and goes on with the next hooks while Chromium works.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   SCREENSHOT_ENABLED, SCREENSHOT_TIMEOUT (seconds; Chromium is killed after it),
#         SCREENSHOT_WINDOW_SIZE ("1280,900"), CHROMIUM_BINARY (else chromium,
#         chromium-browser or google-chrome on PATH), CHECK_SSL_VALIDITY, http_proxy (the
#         egress proxy: Chromium reads no proxy variables on Linux, so it is passed as
#         --proxy-server, without the credentials Chromium cannot take: the proxy admits
#         Chromium by the uid of its socket)
# Outputs (cwd = <snapshot>/screenshot/)
#   screenshot.png
#   stdout: one ArchiveResult, output_str "screenshot/screenshot.png".
# Chromium runs in its own process group with a throw-away profile folder (removed at the
# end). On SIGTERM (the runner's timeout or cleanup) the hook kills that whole group, prints a
# failed ArchiveResult "interrupted" and exits. Chromium missing -> failed "chromium not found:
# run archiveflow install"; a page that does not load (connection refused, DNS) -> failed with
# Chromium's net:: error; a page (or a redirect hop of it) the egress proxy refused or could
# not reach -> failed with the proxy's reason (read from Chromium's net log), no picture of
# the proxy's answer kept.
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
OUT = "screenshot.png"

_child: subprocess.Popen | None = None
_profile: str | None = None


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


def fail(msg: str, code: int = 1) -> int:
    emit({"type": "ArchiveResult", "status": "failed", "output_str": msg[:300], "error": msg})
    return code


def proxy_server() -> str | None:
    """scheme://host:port of the proxy named by http_proxy, credentials left out."""
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


def refused_document(netlog: str, url: str) -> str | None:
    """The egress proxy's answer instead of the page (a refusal, or a server it could not
    reach), for the page itself or a redirect hop of it, found in Chromium's net log: the
    response headers of the request that started with `url`."""
    try:
        with open(netlog, encoding="utf-8", errors="replace") as f:
            events = json.load(f).get("events", [])
    except (OSError, ValueError, AttributeError):
        return None
    first_url: dict = {}
    for ev in events:
        params = ev.get("params") or {}
        src = (ev.get("source") or {}).get("id")
        if isinstance(params.get("url"), str):
            first_url.setdefault(src, params["url"])
        headers = params.get("headers")
        if not isinstance(headers, list) or first_url.get(src, "").rstrip("/") != url.rstrip("/"):
            continue
        lines = {str(h).partition(":")[0].strip().lower(): str(h).partition(":")[2].strip()
                 for h in headers}
        what = lines.get(EGRESS_HEADER.lower(), "")
        if what:  # "refused" by the policy, or "unreachable": the proxy answered, not the site
            return lines.get(f"{EGRESS_HEADER.lower()}-reason") or f"archiveflow egress: {what}"
    return None


def find_chromium() -> str | None:
    configured = os.environ.get("CHROMIUM_BINARY", "").strip()
    for name in ([configured] if configured else []) + list(CANDIDATES):
        path = name if os.sep in name else shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path
    return None


def _die_with_parent() -> None:
    """In the child: its own process group, and SIGKILL if this hook dies without cleanup."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def kill_child() -> None:
    """Kill Chromium's whole process group (browser, zygote, renderers, GPU)."""
    global _child
    child, _child = _child, None
    if child is None or child.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cleanup() -> None:
    kill_child()
    if _profile:
        shutil.rmtree(_profile, ignore_errors=True)


def on_sigterm(signum: int, _frame: object) -> None:
    cleanup()
    fail(f"interrupted (signal {signum})")
    os._exit(1)


def main() -> int:
    global _child, _profile
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("SCREENSHOT_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": "SCREENSHOT_ENABLED=False"})
        return 10
    if not re.match(r"^(https?|file)://", url):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": f"not an http(s) URL: {url[:100]}"})
        return 10
    chromium = find_chromium()
    if not chromium:
        return fail("chromium not found: run archiveflow install")
    timeout = env_int("SCREENSHOT_TIMEOUT", env_int("TIMEOUT", 60))
    size = os.environ.get("SCREENSHOT_WINDOW_SIZE") or "1280,900"
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    _profile = tempfile.mkdtemp(prefix="archiveflow-chromium-")
    out = os.path.abspath(OUT)
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
        f"--user-data-dir={_profile}", f"--screenshot={out}", f"--window-size={size}",
    ]
    if not env_bool("CHECK_SSL_VALIDITY", True):
        cmd.append("--ignore-certificate-errors")
    proxy = proxy_server()
    netlog = os.path.join(_profile, "netlog.json")
    if proxy:
        # <-loopback>: Chromium otherwise never sends localhost and 127.0.0.1 to a proxy.
        cmd += [f"--proxy-server={proxy}", "--proxy-bypass-list=<-loopback>",
                f"--log-net-log={netlog}"]
    cmd.append(url)
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS="disabled:")
    started = time.monotonic()
    try:
        _child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env,
                                  preexec_fn=_die_with_parent)
        try:
            log_bytes, _ = _child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return fail(f"chromium did not finish within SCREENSHOT_TIMEOUT={timeout}s")
        rc = _child.returncode
        refused = refused_document(netlog, url) if proxy else None
    finally:
        cleanup()
    if refused:
        if os.path.exists(out):
            os.remove(out)  # a picture of the proxy's refusal is not the page
        return fail(f"{url}: {refused}")
    log = log_bytes.decode("utf-8", errors="replace")
    secs = time.monotonic() - started
    load_err = re.search(r"Page load failed: (\S+)", log)
    if load_err:
        if os.path.exists(out):
            os.remove(out)  # a picture of Chromium's error page is not the page
        return fail(f"{url}: {load_err.group(1)}")
    if rc != 0 or not os.path.isfile(out) or os.path.getsize(out) == 0:
        tail = [ln for ln in log.splitlines() if "ERROR" in ln or "FATAL" in ln][-2:]
        return fail(f"chromium exited {rc} without a screenshot: {' | '.join(tail)}"[:1000])
    emit({"type": "ArchiveResult", "status": "succeeded", "output_str": f"screenshot/{OUT}",
          "output_json": {"bytes": os.path.getsize(out), "window_size": size,
                          "seconds": round(secs, 3)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
