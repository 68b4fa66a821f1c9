#!/usr/bin/env -S python3 -S
# headers: fetch the URL once (GET, following redirects) and save the response headers.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   HEADERS_ENABLED, HEADERS_TIMEOUT (seconds), HEADERS_USER_AGENT / USER_AGENT,
#         CHECK_SSL_VALIDITY
# Outputs (cwd = <snapshot>/headers/)
#   headers.json: {url, final_url, status, reason, redirects: [{url, status, location}],
#                  headers: {name: value | [values]}, fetched_at}
#   stdout: one ArchiveResult, output_str "headers/headers.json", output_json {status, ...}.
# Any HTTP answer (404 and 500 included) is `succeeded`: the headers were captured, and the
# status is in output_json. No answer at all (connection refused, DNS, timeout) is `failed`,
# and so is a URL or redirect hop the egress proxy (http_proxy) refused, with its reason.
from __future__ import annotations

import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone

DEFAULT_UA = "Mozilla/5.0 (compatible; archiveflow/0.1)"
MAX_REDIRECTS = 20


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


class _Recorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, noting each hop."""

    max_redirections = MAX_REDIRECTS

    def __init__(self) -> None:
        self.hops: list[dict] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        self.hops.append({"url": req.full_url, "status": code, "location": headers.get("Location")})
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def header_dict(msg) -> dict:
    out: dict = {}
    for name, value in msg.items():
        if name in out:
            prev = out[name]
            out[name] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[name] = value
    return out


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("HEADERS_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped", "output_str": "HEADERS_ENABLED=False"})
        return 10
    if not re.match(r"^https?://", url):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": f"not an http(s) URL: {url[:100]}"})
        return 10
    timeout = env_int("HEADERS_TIMEOUT", env_int("TIMEOUT", 30))
    ua = os.environ.get("HEADERS_USER_AGENT") or os.environ.get("USER_AGENT") or DEFAULT_UA
    recorder = _Recorder()
    handlers: list = [recorder]
    if not env_bool("CHECK_SSL_VALIDITY", True):
        handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(http_url(url), headers={"User-Agent": ua, "Accept": "*/*"})
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        refused = egress_failure(e)
        if refused:  # the proxy's answer, not the server's: nothing of the target to keep
            where = f"{url} (redirected to {e.geturl()})" if recorder.hops else url
            msg = f"{where}: {refused}"
            emit({"type": "ArchiveResult", "status": "failed", "output_str": msg[:300],
                  "error": msg})
            return 1
        resp = e  # an error status is still an answer with headers
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(reason, socket.gaierror):
            reason = f"DNS lookup failed ({reason.strerror})"
        msg = f"{url}: {reason}"
        emit({"type": "ArchiveResult", "status": "failed", "output_str": msg[:300], "error": msg})
        return 1
    except (OSError, ValueError) as e:
        msg = f"{url}: {'timed out' if isinstance(e, TimeoutError) else e}"
        emit({"type": "ArchiveResult", "status": "failed", "output_str": msg[:300], "error": msg})
        return 1
    with resp:
        status = resp.status if hasattr(resp, "status") else resp.code
        data = {
            "url": url,
            "final_url": resp.geturl(),
            "status": status,
            "reason": getattr(resp, "reason", ""),
            "redirects": recorder.hops,
            "headers": header_dict(resp.headers),
            "fetched_at": datetime.now(timezone.utc).isoformat(),
        }
    with open("headers.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
    emit({"type": "ArchiveResult", "status": "succeeded", "output_str": "headers/headers.json",
          "output_json": {"status": status, "final_url": data["final_url"],
                          "redirects": len(recorder.hops),
                          "content_type": resp.headers.get("Content-Type")}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
