#!/usr/bin/env -S python3 -S
# favicon: save the site's icon: the page's <link rel="icon">, else /favicon.ico.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   FAVICON_ENABLED, FAVICON_TIMEOUT (seconds per fetch), SNAP_DIR (reads the HTML
#         wget saved, via $SNAP_DIR/wget/wget.json), USER_AGENT, CHECK_SSL_VALIDITY
# Outputs (cwd = <snapshot>/favicon/)
#   favicon.<png|ico|gif|jpg|svg|webp>
#   stdout: one ArchiveResult, output_str "favicon/favicon.<ext>", output_json {icon_url, ...}.
# No icon anywhere (404s, or answers that are not images) -> noresults; the page unreachable
# -> failed.
from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

DEFAULT_UA = "Mozilla/5.0 (compatible; archiveflow/0.1)"
MAX_BYTES = 10 * 1024 * 1024
MAX_ICON_BYTES = 2 * 1024 * 1024
EXT_BY_TYPE = {"image/png": "png", "image/x-icon": "ico", "image/vnd.microsoft.icon": "ico",
               "image/ico": "ico", "image/gif": "gif", "image/jpeg": "jpg", "image/jpg": "jpg",
               "image/svg+xml": "svg", "image/webp": "webp", "image/avif": "avif"}
MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\x00\x00\x01\x00", "ico"), (b"GIF8", "gif"),
         (b"\xff\xd8\xff", "jpg"), (b"RIFF", "webp"))


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


class _IconParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.icons: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and self.base is None and a.get("href"):
            self.base = a["href"]
        elif tag == "link" and a.get("href"):
            rels = a.get("rel", "").lower().split()
            if "icon" in rels:
                self.icons.append((0, a["href"].strip()))
            elif any("icon" in r for r in rels):  # apple-touch-icon, mask-icon, ...
                self.icons.append((1, a["href"].strip()))


def sniff(data: bytes, ctype: str, url: str) -> str | None:
    """The icon's extension, or None when the bytes are not an image."""
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:2048].lower()):
        return "svg"
    if head.startswith((b"<!doctype", b"<html")):
        return None  # a soft-404 page served as the icon
    ext = EXT_BY_TYPE.get(ctype.split(";")[0].strip().lower())
    if ext:
        return ext
    m = re.search(r"\.(png|ico|gif|jpe?g|svg|webp)$", urlsplit(url).path, re.IGNORECASE)
    return m.group(1).lower().replace("jpeg", "jpg") if m else None


def get_icon(icon_url: str, timeout: int) -> tuple[bytes, str] | None:
    """(bytes, content type) of an icon URL, or None when there is no usable answer."""
    if icon_url.startswith("data:"):
        meta, _, payload = icon_url[5:].partition(",")
        import base64  # only for data: URLs (its imports are a tenth of this hook's CPU)

        try:
            data = (base64.b64decode(payload) if meta.endswith(";base64")
                    else unquote_to_bytes(payload))
        except ValueError:
            return None
        return data, meta.split(";")[0]
    if not re.match(r"^https?://", icon_url):
        return None
    # Imported only here: ssl + urllib cost ~30 ms of start-up, often not needed at all.
    import ssl
    import urllib.error
    import urllib.request

    ua = os.environ.get("USER_AGENT") or DEFAULT_UA
    ctx = None if env_bool("CHECK_SSL_VALIDITY", True) else ssl._create_unverified_context()
    req = urllib.request.Request(icon_url, headers={"User-Agent": ua, "Accept": "image/*,*/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.read(MAX_ICON_BYTES), resp.headers.get("Content-Type", "")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def local_copy(href: str, page_file: str) -> bytes | None:
    """The icon as wget saved it next to the page (-p fetches rel=icon, -k makes the link
    relative), so that no second request is needed."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^/", href):
        return None
    wget_dir = os.path.realpath(os.path.join(os.environ.get("SNAP_DIR", ""), "wget"))
    path = os.path.realpath(os.path.join(os.path.dirname(page_file), href.split("?")[0]))
    if not path.startswith(wget_dir + os.sep) or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read(MAX_ICON_BYTES)


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("FAVICON_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": "FAVICON_ENABLED=False"})
        return 10
    if not re.match(r"^https?://", url):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": f"not an http(s) URL: {url[:100]}"})
        return 10
    timeout = env_int("FAVICON_TIMEOUT", env_int("TIMEOUT", 30))
    try:
        html, base, source = load_html(url, timeout)
    except FetchError as e:
        emit({"type": "ArchiveResult", "status": "failed", "output_str": str(e)[:300],
              "error": str(e)})
        return 1
    candidates: dict[str, str | None] = {}  # icon URL -> href as written in the page
    if html:
        p = _IconParser()
        p.feed(html)
        p.close()
        page_base = urljoin(base, p.base) if p.base else base
        for _prio, href in sorted(p.icons, key=lambda icon: icon[0]):
            candidates.setdefault(urljoin(page_base, href), None if p.base else href)
    root = urlsplit(base)
    candidates.setdefault(f"{root.scheme}://{root.netloc}/favicon.ico", None)
    page_file = os.path.join(os.environ.get("SNAP_DIR", ""), source)
    tried = []
    for icon_url, href in candidates.items():
        tried.append(icon_url[:200])
        data = local_copy(href, page_file) if href and source.startswith("wget/") else None
        from_wget = bool(data)
        got = (data, "") if data else get_icon(icon_url, timeout)
        if not got or not got[0]:
            continue
        data, ctype = got
        ext = sniff(data, ctype, icon_url)
        if not ext:
            continue
        name = f"favicon.{ext}"
        with open(name, "wb") as f:
            f.write(data)
        emit({"type": "ArchiveResult", "status": "succeeded", "output_str": f"favicon/{name}",
              "output_json": {"icon_url": icon_url[:2000], "content_type": ctype,
                              "bytes": len(data), "from_wget": from_wget}})
        return 0
    emit({"type": "ArchiveResult", "status": "noresults", "output_str": "no favicon found",
          "output_json": {"tried": tried}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
