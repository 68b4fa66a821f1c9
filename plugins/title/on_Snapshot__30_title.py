#!/usr/bin/env -S python3 -S
# title: the page's title, from the HTML wget saved (else fetched here); when that HTML has
# none (a title set by JavaScript), the title of the DOM as the browser rendered it.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   TITLE_ENABLED, TITLE_TIMEOUT (seconds, for the fetch), SNAP_DIR (reads
#         $SNAP_DIR/wget/wget.json -> main_html, and $SNAP_DIR/dom/output.html, which the dom
#         plugin's hook writes before this one runs), USER_AGENT, CHECK_SSL_VALIDITY
# Outputs (cwd = <snapshot>/title/)
#   title.txt: the title, one line
#   stdout: one ArchiveResult whose output_str is the title itself.
# <title>, else <meta property="og:title">, else the rendered DOM's <title>; none ->
# noresults. An error page's title (404) is still the page's title. No answer from the
# server -> failed.
from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser

DEFAULT_UA = "Mozilla/5.0 (compatible; archiveflow/0.1)"
MAX_BYTES = 10 * 1024 * 1024
RENDERED = "dom/output.html"


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


class _TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self.og_title: str | None = None
        self._buf: list[str] | None = None
        self._skip = 0  # inside <svg>: its <title> is not the page's

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "svg":
            self._skip += 1
        elif tag == "title" and self.title is None and not self._skip:
            self._buf = []
        elif tag == "meta" and self.og_title is None:
            a = {k.lower(): (v or "") for k, v in attrs}
            if a.get("property", a.get("name", "")).lower() in ("og:title", "twitter:title"):
                self.og_title = a.get("content")

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._skip:
            self._skip -= 1
        elif tag == "title" and self._buf is not None:
            self.title = "".join(self._buf)
            self._buf = None

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


def extract_title(html: str) -> str | None:
    p = _TitleParser()
    p.feed(html)
    p.close()
    if p._buf is not None:  # unclosed <title>
        p.title = "".join(p._buf)[:1000]
    for cand in (p.title, p.og_title):
        if cand and cand.strip():
            return " ".join(cand.split())[:1000]
    return None


def rendered_title() -> str | None:
    """The title of the DOM the browser rendered (plugins/dom), if it saved one."""
    try:
        with open(os.path.join(os.environ.get("SNAP_DIR", ""), RENDERED), "rb") as f:
            return extract_title(decode(f.read(MAX_BYTES)))
    except OSError:
        return None


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("TITLE_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped", "output_str": "TITLE_ENABLED=False"})
        return 10
    timeout = env_int("TITLE_TIMEOUT", env_int("TIMEOUT", 30))
    try:
        html, _base, source = load_html(url, timeout)
    except FetchError as e:
        emit({"type": "ArchiveResult", "status": "failed", "output_str": str(e)[:300],
              "error": str(e)})
        return 1
    title = extract_title(html) if html else None
    if not title and html is not None:
        # No title in the HTML as served: JavaScript may set one, which the browser saw.
        title = rendered_title()
        source = RENDERED if title else source
    if not title:
        why = "page is not HTML" if html is None else "page has no title"
        emit({"type": "ArchiveResult", "status": "noresults", "output_str": why})
        return 0
    with open("title.txt", "w", encoding="utf-8") as f:
        f.write(title + "\n")
    emit({"type": "ArchiveResult", "status": "succeeded", "output_str": title,
          "output_json": {"title": title, "source": source, "file": "title/title.txt"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
