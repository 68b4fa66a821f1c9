#!/usr/bin/env -S python3 -S
# htmltotext: the page's readable text, for full-text search.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   HTMLTOTEXT_ENABLED, HTMLTOTEXT_TIMEOUT (seconds, for the fetch), SNAP_DIR (reads the
#         HTML wget saved, via $SNAP_DIR/wget/wget.json), USER_AGENT, CHECK_SSL_VALIDITY
# Outputs (cwd = <snapshot>/htmltotext/)
#   htmltotext.txt: visible text; script/style/template/svg/nav and the <head> dropped; one
#     line per block element, at most one blank line in a row.
#   stdout: one ArchiveResult, output_str "htmltotext/htmltotext.txt". No text -> noresults;
#   page unreachable -> failed.
from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser

DEFAULT_UA = "Mozilla/5.0 (compatible; archiveflow/0.1)"
MAX_BYTES = 10 * 1024 * 1024
SKIP = frozenset({"script", "style", "noscript", "template", "svg", "nav", "head", "iframe",
                  "object", "canvas", "select", "button", "math"})
# Breaks kept from the layout: a paragraph-like block ends with a blank line, a line-like one
# with a newline.
PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table",
                       "section", "article", "header", "footer", "main", "aside", "figure",
                       "form", "fieldset", "address", "details", "ul", "ol", "dl", "hr"})
LINE = frozenset({"br", "div", "li", "dt", "dd", "tr", "caption", "figcaption", "summary",
                  "body", "html", "option", "legend", "label"})
CELL = frozenset({"td", "th"})


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


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_stack: list[str] = []
        self.pre = 0

    def _break(self, newlines: int) -> None:
        have = 0
        for chunk in reversed(self.out):
            stripped = chunk.rstrip(" ")
            have += len(stripped) - len(stripped.rstrip("\n"))
            if stripped.strip("\n"):
                break
        if not self.out:
            return
        self.out.append("\n" * max(0, newlines - have))

    def _tag(self, tag: str) -> None:
        if tag in PARAGRAPH:
            self._break(2)
        elif tag in LINE:
            self._break(1)
        elif tag in CELL and self.out and not self.out[-1].endswith((" ", "\n")):
            self.out.append(" ")

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self.skip_stack or tag in SKIP:
            if tag in SKIP:
                self.skip_stack.append(tag)
            return
        if tag == "pre":
            self.pre += 1
        self._tag(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if not self.skip_stack and tag in ("br", "hr"):
            self._tag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip_stack:
            if tag in self.skip_stack:
                # Pop up to the matching tag: tolerates unclosed tags inside skipped parts.
                while self.skip_stack and self.skip_stack.pop() != tag:
                    pass
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag != "br":
            self._tag(tag)

    def handle_data(self, data: str) -> None:
        if self.skip_stack:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if self.out and self.out[-1].endswith(("\n", " ")):
                data = data.lstrip(" ")
        if data:
            self.out.append(data)

    def text(self) -> str:
        lines = [ln.strip() for ln in "".join(self.out).split("\n")]
        out: list[str] = []
        for ln in lines:
            if ln or (out and out[-1]):
                out.append(ln)
        return "\n".join(out).strip()


def html_to_text(html: str) -> str:
    p = _TextParser()
    p.feed(html)
    p.close()
    return p.text()


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("HTMLTOTEXT_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": "HTMLTOTEXT_ENABLED=False"})
        return 10
    timeout = env_int("HTMLTOTEXT_TIMEOUT", env_int("TIMEOUT", 30))
    try:
        html, _base, source = load_html(url, timeout)
    except FetchError as e:
        emit({"type": "ArchiveResult", "status": "failed", "output_str": str(e)[:300],
              "error": str(e)})
        return 1
    text = html_to_text(html) if html else ""
    if not text:
        why = "page is not HTML" if html is None else "page has no text"
        emit({"type": "ArchiveResult", "status": "noresults", "output_str": why})
        return 0
    with open("htmltotext.txt", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    emit({"type": "ArchiveResult", "status": "succeeded", "output_str": "htmltotext/htmltotext.txt",
          "output_json": {"chars": len(text), "source": source}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
