#!/usr/bin/env -S python3 -S
# parse_html_urls: the page's outlinks, as Snapshot records one level deeper.
#
# Inputs
#   argv  --url=<url> --snapshot-id=<id> --crawl-id --depth=<n> (unknown options are ignored)
#   env   PARSE_HTML_URLS_ENABLED, PARSE_HTML_URLS_TIMEOUT (seconds, for the fetch), SNAP_DIR
#         (reads the HTML wget saved as the server sent it, before wget converted its links:
#         $SNAP_DIR/wget/wget.json -> original_html), USER_AGENT,
#         CHECK_SSL_VALIDITY
# Outputs (cwd = <snapshot>/parse_html_urls/)
#   urls.jsonl: the records printed below, one per line
#   stdout: {"type":"Snapshot","url":...,"depth":<n+1>,"parent_snapshot_id":...} per link,
#     then one ArchiveResult (noresults when the page has no links).
# Every <a href> and <area href>, resolved against the page URL (after redirects) and its
# <base href>, fragment removed, http/https only, de-duplicated in page order, the page
# itself left out. The pipeline, not this hook, applies max depth and allow/deny patterns.
from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

DEFAULT_UA = "Mozilla/5.0 (compatible; archiveflow/0.1)"
MAX_BYTES = 10 * 1024 * 1024


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


# ---- shared by the hooks that read the page (tests/plugins/test_shared_code.py) ----
class FetchError(Exception):
    """The page could not be read at all (no HTTP answer, or the egress policy refused it)."""


def decode(raw: bytes, header_charset: str | None = None) -> str:
    m = re.search(rb"""<meta[^>]+charset=["']?([\w.:-]+)""", raw[:4096], re.IGNORECASE)
    for cs in ((m.group(1).decode("ascii", "ignore") if m else None), header_charset, "utf-8"):
        if cs:
            try:
                return raw.decode(cs, errors="replace")
            except LookupError:
                continue
    return raw.decode("utf-8", errors="replace")


def load_html(url: str, timeout: int, original: bool = False) -> tuple[str | None, str, str]:
    """(html or None when the page is not HTML, base URL, where it came from).

    Reads the page wget saved ($SNAP_DIR/wget/wget.json names it) when there is one: its
    copy with links converted for offline viewing, or with `original` the page as served
    (wget's backup from before the conversion). Else fetches the URL itself (through the
    egress proxy the environment names); an HTTP error page is still a page. Raises
    FetchError when there is no answer at all or the egress policy refused the URL.
    """
    snap = os.environ.get("SNAP_DIR", "")
    try:
        with open(os.path.join(snap, "wget", "wget.json"), encoding="utf-8") as f:
            info = json.load(f)
        rel = (original and info.get("original_html")) or info["main_html"]
        with open(os.path.join(snap, rel), "rb") as f:
            return decode(f.read()), info.get("final_url") or url, rel
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # Imported only here: ssl + urllib cost ~30 ms of start-up that the wget path never needs.
    import ssl
    import urllib.error
    import urllib.request

    ua = os.environ.get("USER_AGENT") or DEFAULT_UA
    req = urllib.request.Request(http_url(url), headers={"User-Agent": ua})
    ctx = None if env_bool("CHECK_SSL_VALIDITY", True) else ssl._create_unverified_context()
    try:
        try:
            resp = urllib.request.urlopen(req, timeout=timeout, context=ctx)
        except urllib.error.HTTPError as e:
            refused = egress_failure(e)
            if refused:
                raise FetchError(f"{url}: {refused}") from None
            resp = e  # a 404 page is still the page
        with resp:
            ctype = resp.headers.get("Content-Type", "")
            if ctype and not re.search(r"html|xml", ctype, re.IGNORECASE):
                return None, resp.geturl(), url
            raw = resp.read(MAX_BYTES)
            return decode(raw, resp.headers.get_content_charset()), resp.geturl(), url
    except urllib.error.URLError as e:
        reason = "connection refused" if isinstance(e.reason, ConnectionRefusedError) else e.reason
        raise FetchError(f"{url}: {reason}") from None
    except (OSError, ValueError) as e:
        raise FetchError(f"{url}: {'timed out' if isinstance(e, TimeoutError) else e}") from None
# ---- end of shared part ----


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in ("a", "area", "base"):
            return
        href = next((v for k, v in attrs if k.lower() == "href" and v), None)
        if href is None:
            return
        if tag == "base":
            if self.base is None:
                self.base = href.strip()
        else:
            self.hrefs.append(href.strip())


def outlinks(html: str, page_url: str) -> list[str]:
    p = _LinkParser()
    p.feed(html)
    p.close()
    base = urljoin(page_url, p.base) if p.base else page_url
    own = urldefrag(page_url)[0]
    seen: dict[str, None] = {}
    for href in p.hrefs:
        try:
            url = urldefrag(urljoin(base, href))[0]
            parts = urlsplit(url)
        except ValueError:
            continue  # e.g. a malformed IPv6 host
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            continue
        if url != own:
            seen.setdefault(url, None)
    return list(seen)


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("PARSE_HTML_URLS_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": "PARSE_HTML_URLS_ENABLED=False"})
        return 10
    timeout = env_int("PARSE_HTML_URLS_TIMEOUT", env_int("TIMEOUT", 30))
    try:
        depth = int(args.get("depth") or 0)
    except ValueError:
        depth = 0
    try:
        # As served: wget's converted copy turns href="/" into "index.html", a second URL
        # for the same page.
        html, base, source = load_html(url, timeout, original=True)
    except FetchError as e:
        emit({"type": "ArchiveResult", "status": "failed", "output_str": str(e)[:300],
              "error": str(e)})
        return 1
    links = outlinks(html, base) if html else []
    if not links:
        why = "page is not HTML" if html is None else "no outlinks"
        emit({"type": "ArchiveResult", "status": "noresults", "output_str": why})
        return 0
    parent = args.get("snapshot_id")
    lines = []
    for link in links:
        rec = {"type": "Snapshot", "url": link, "depth": depth + 1}
        if parent:
            rec["parent_snapshot_id"] = parent
        lines.append(json.dumps(rec, ensure_ascii=False))
    with open("urls.jsonl", "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    sys.stdout.write("".join(line + "\n" for line in lines))
    emit({"type": "ArchiveResult", "status": "succeeded",
          "output_str": "parse_html_urls/urls.jsonl",
          "output_json": {"count": len(lines), "source": source}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
