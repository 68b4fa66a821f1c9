#!/usr/bin/env python3
# seeds: parse a crawl's seed list into Snapshot records.
#
# Inputs
#   argv  --url=<first seed> --crawl-id=<id> --source-url=<seed text | file path | http(s) URL
#         of a feed/sitemap/bookmarks file> [--parser=NAME]; unknown options are ignored.
#   env   SEEDS_ENABLED, SEEDS_TIMEOUT (seconds per fetch), SEEDS_PARSER (auto|txt|netscape|
#         rss|atom|sitemap|jsonl; --parser wins), SEEDS_USER_AGENT / USER_AGENT,
#         CHECK_SSL_VALIDITY.
# Formats
#   txt       URLs anywhere in plain text (http, https, ftp, ...), trailing punctuation stripped
#   netscape  bookmarks HTML export: ADD_DATE -> bookmarked_at, TAGS and folder path -> tags
#   rss       RSS 2.0 (and 1.0): item link, title, pubDate, category
#   atom      entry link (rel=alternate), title, published/updated, category term
#   sitemap   urlset loc + lastmod; a sitemapindex's child sitemaps are fetched by URL
#   jsonl     one {"url": ..., "title", "tags", "bookmarked_at"} object per line
# Outputs
#   stdout  one {"type":"Snapshot","url","depth":0,"title","tags","bookmarked_at"} per seed,
#           then one ArchiveResult; written to ./urls.jsonl as well.
#   Streaming: a local txt, jsonl or bookmarks file is read line by line (chunk by chunk)
#   and its seeds written to urls.jsonl as they are found, then copied to stdout; only a
#   16-byte digest per URL is held (first occurrence wins), so a 2M-line list stays in a
#   few hundred MB. XML feeds and fetched files are parsed whole.
#   A malformed source prints no Snapshot at all: one line on stderr naming the line or
#   element, a failed ArchiveResult, exit 1 -- so nothing is archived half-way. So does a feed,
#   sitemap or child sitemap the egress proxy (http_proxy) refused, with the proxy's reason.
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

PARSERS = ("txt", "netscape", "rss", "atom", "sitemap", "jsonl")
DEFAULT_UA = "Mozilla/5.0 (compatible; archiveflow/0.1)"
MAX_SITEMAPS = 100
# A URL: a scheme, "://", then anything up to whitespace or a delimiter that never ends a URL.
URL_RE = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s<>"'`{}|\\^]+""")
TRAILING = ".,;:!?)]}'\">"
FEED_HINTS = re.compile(r"(\.(xml|rss|atom|rdf|txt|jsonl|ndjson|json)$)|sitemap|feed|rss|bookmark",
                        re.IGNORECASE)


class SeedError(Exception):
    """A source that cannot be read or parsed; the message names the line or element."""


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


# --- reading the source -------------------------------------------------------------------

def fetch(url: str, timeout: int) -> str:
    # Imported only here: ssl + urllib cost ~30 ms of start-up that local sources never need.
    import ssl
    import urllib.error
    import urllib.request

    ua = os.environ.get("SEEDS_USER_AGENT") or os.environ.get("USER_AGENT") or DEFAULT_UA
    req = urllib.request.Request(http_url(url), headers={"User-Agent": ua})
    ctx = None
    if not env_bool("CHECK_SSL_VALIDITY", True):
        ctx = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            raw = resp.read()
            charset = resp.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as e:
        refused = egress_failure(e)
        if refused:
            raise SeedError(f"{url}: {refused}") from None
        raise SeedError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise SeedError(f"{url}: {e.reason}") from None
    except (OSError, ValueError) as e:
        raise SeedError(f"{url}: {e}") from None
    return raw.decode(charset, errors="replace")


class Source:
    """The seed source: a local file (read in chunks, never whole unless a parser needs the
    whole text) or text already in memory (inline seeds, a fetched file)."""

    CHUNK = 1 << 20

    def __init__(self, name: str, path: str | None = None, text: str | None = None) -> None:
        self.name, self.path, self._text = name, path, text

    def head(self, size: int = 64 * 1024) -> str:
        if self._text is not None:
            return self._text[:size]
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            return f.read(size).decode("utf-8", errors="replace")

    def text(self) -> str:
        if self._text is None:
            with open(self.path, "rb") as f:  # type: ignore[arg-type]
                return f.read().decode("utf-8", errors="replace")
        return self._text

    def lines(self):
        """Lines without their line end, streamed from a file."""
        if self._text is not None:
            yield from self._text.splitlines()
            return
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            for raw in f:
                yield raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def chunks(self):
        """The text in pieces of about CHUNK characters."""
        if self._text is not None:
            yield self._text
            return
        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            while True:
                piece = f.read(self.CHUNK)
                if not piece:
                    return
                yield piece


def read_source(source: str, forced: str | None, timeout: int) -> Source:
    """The seed source, named for messages."""
    src = source.strip()
    if src and "\n" not in src and os.path.isfile(src):
        return Source(os.path.basename(src), path=src)
    single_url = bool(re.fullmatch(r"https?://\S+", src))
    # A lone http(s) URL is itself the seed, unless it looks like a feed/sitemap/bookmarks
    # file or a parser is forced: then it names the file to fetch and parse.
    if single_url and (forced or FEED_HINTS.search(urlsplit(src).path)):
        name = os.path.basename(urlsplit(src).path) or src
        return Source(name, text=fetch(src, timeout))
    return Source("seeds", text=source)


def detect(text: str) -> str:
    head = text.lstrip("\ufeff \t\r\n")[:4096]
    low = head.lower()
    if "<!doctype netscape-bookmark-file" in low:
        return "netscape"
    if head.startswith("<"):
        root = re.search(r"<(?![?!])([a-zA-Z_][\w.:-]*)", head)
        name = root.group(1).split(":")[-1].lower() if root else ""
        if name in ("rss", "rdf"):
            return "rss"
        if name == "feed":
            return "atom"
        if name in ("urlset", "sitemapindex"):
            return "sitemap"
        if "<dt><a " in low or "<dl>" in low:
            return "netscape"
        return "txt"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    return "txt"


# --- helpers ------------------------------------------------------------------------------

def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat()


def parse_date(value: str | None) -> str | None:
    """RFC 822, ISO 8601 or unix seconds -> ISO 8601 UTC; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    v = value.strip()
    if re.fullmatch(r"\d{9,11}(\.\d+)?", v):
        return iso(datetime.fromtimestamp(float(v), tz=timezone.utc))
    try:
        return iso(parsedate_to_datetime(v))
    except (TypeError, ValueError, IndexError):
        pass
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            v += "T00:00:00"
        return iso(datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        return None


def seed(url: str, title: str | None = None, tags: list[str] | None = None,
         bookmarked_at: str | None = None) -> dict:
    rec: dict = {"type": "Snapshot", "url": url.strip(), "depth": 0}
    if title and title.strip():
        rec["title"] = " ".join(title.split())
    clean_tags = [t.strip() for t in (tags or []) if t and t.strip()]
    if clean_tags:
        rec["tags"] = list(dict.fromkeys(clean_tags))
    if bookmarked_at:
        rec["bookmarked_at"] = bookmarked_at
    return rec


URLISH = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")


def looks_like_url(url: str) -> bool:
    return bool(URLISH.match(url.strip()))


def parse_xml(name: str, text: str) -> ET.Element:
    try:
        return ET.fromstring(text.lstrip("\ufeff").encode("utf-8"))
    except ET.ParseError as e:
        msg = re.sub(r":\s*line \d+, column \d+$", "", str(e))
        line = e.position[0] if getattr(e, "position", None) else "?"
        raise SeedError(f"{name} line {line}: {msg}") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].split(":")[-1] if isinstance(tag, str) else ""


def child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if local(c.tag) == name), None)


def children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if local(c.tag) == name]


def text_of(el: ET.Element | None) -> str:
    return "".join(el.itertext()).strip() if el is not None else ""


# --- parsers ------------------------------------------------------------------------------

def parse_txt(name: str, src: Source, timeout: int):
    # A URL never spans lines (URL_RE stops at whitespace): line by line is the same as whole.
    for line in src.lines():
        yield from _urls_in(line)


def _urls_in(text: str):
    for m in URL_RE.finditer(text):
        url = m.group(0)
        while url and url[-1] in TRAILING:
            # Keep a closing parenthesis that balances one inside the URL (Wikipedia-style).
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        # urlsplit's netloc is what follows "://" up to the first "/", "?" or "#": a
        # character test is the same here, at a fifth of urlsplit's cost per URL.
        rest = url.partition("://")[2]
        has_host = bool(rest) and rest[0] not in "/?#"
        if looks_like_url(url) and "://" in url and has_host:
            yield seed(url)


class _NetscapeParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.folders: list[str | None] = []
        self.pending_folder: str | None = None
        self.in_h3 = False
        self.h3_text = ""
        self.link: dict | None = None
        self.link_text = ""
        self.seeds: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "h3":
            self.in_h3, self.h3_text = True, ""
        elif tag == "dl":
            self.folders.append(self.pending_folder)
            self.pending_folder = None
        elif tag == "a" and a.get("href"):
            self.link, self.link_text = a, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3" and self.in_h3:
            self.in_h3 = False
            self.pending_folder = " ".join(self.h3_text.split())
        elif tag == "dl" and self.folders:
            self.folders.pop()
        elif tag == "a" and self.link is not None:
            self.finish_link()

    def handle_data(self, data: str) -> None:
        if self.in_h3:
            self.h3_text += data
        elif self.link is not None:
            self.link_text += data

    def finish_link(self) -> None:
        a, self.link = self.link, None
        url = a["href"].strip()
        if not looks_like_url(url):
            return  # e.g. Firefox "place:" smart bookmarks
        tags = [t for t in a.get("tags", "").split(",")]
        path = "/".join(f for f in self.folders if f)
        if path:
            tags.append(path)
        when = parse_date(a.get("add_date"))
        self.seeds.append(seed(url, self.link_text, tags, when))


def parse_netscape(name: str, src: Source, timeout: int):
    p = _NetscapeParser()
    for piece in src.chunks():
        p.feed(piece)
        yield from p.seeds
        p.seeds.clear()
    p.close()
    if p.link is not None:
        p.finish_link()
    yield from p.seeds


def parse_rss(name: str, src: Source, timeout: int) -> list[dict]:
    root = parse_xml(name, src.text())
    if local(root.tag) not in ("rss", "RDF"):
        raise SeedError(f"{name}: root element <{local(root.tag)}> is not <rss>")
    out = []
    for item in (el for el in root.iter() if local(el.tag) == "item"):
        url = text_of(child(item, "link"))
        if not url:
            guid = child(item, "guid")
            if guid is not None and guid.get("isPermaLink", "true").lower() != "false":
                url = text_of(guid)
        if not url:
            url = item.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about", "")
        if not looks_like_url(url):
            continue
        when = parse_date(text_of(child(item, "pubDate")) or text_of(child(item, "date")))
        tags = [text_of(c) for c in children(item, "category")]
        out.append(seed(url, text_of(child(item, "title")), tags, when))
    return out


def parse_atom(name: str, src: Source, timeout: int) -> list[dict]:
    root = parse_xml(name, src.text())
    if local(root.tag) != "feed":
        raise SeedError(f"{name}: root element <{local(root.tag)}> is not <feed>")
    out = []
    for entry in children(root, "entry"):
        links = children(entry, "link")
        best = next((lk for lk in links if lk.get("rel", "alternate") == "alternate"), None)
        url = (best.get("href", "") if best is not None else "").strip()
        if not url:
            continue
        url = urljoin(root.get("{http://www.w3.org/XML/1998/namespace}base", ""), url)
        if not looks_like_url(url):
            continue
        when = parse_date(text_of(child(entry, "published")) or text_of(child(entry, "updated")))
        tags = [c.get("term", "") for c in children(entry, "category")]
        title_el = child(entry, "title")
        title = text_of(title_el)
        if title_el is not None and title_el.get("type") in ("html", "xhtml"):
            title = html.unescape(re.sub(r"<[^>]*>", "", title))
        out.append(seed(url, title, tags, when))
    return out


def parse_sitemap(name: str, src: Source, timeout: int, _seen: set | None = None) -> list[dict]:
    seen = _seen if _seen is not None else set()
    root = parse_xml(name, src.text())
    kind = local(root.tag)
    out: list[dict] = []
    if kind == "urlset":
        for u in children(root, "url"):
            url = text_of(child(u, "loc"))
            if looks_like_url(url):
                out.append(seed(url, bookmarked_at=parse_date(text_of(child(u, "lastmod")))))
        return out
    if kind != "sitemapindex":
        raise SeedError(f"{name}: root element <{kind}> is neither <urlset> nor <sitemapindex>")
    for sm in children(root, "sitemap"):
        loc = text_of(child(sm, "loc"))
        if not loc or loc in seen:
            continue
        if len(seen) >= MAX_SITEMAPS:
            raise SeedError(f"{name}: more than {MAX_SITEMAPS} child sitemaps")
        seen.add(loc)
        if not re.match(r"https?://", loc):
            raise SeedError(f"{name}: child sitemap <loc>{loc}</loc> is not an http(s) URL")
        child_name = os.path.basename(urlsplit(loc).path) or loc
        out.extend(parse_sitemap(child_name, Source(child_name, text=fetch(loc, timeout)),
                                 timeout, seen))
    return out


def parse_jsonl(name: str, src: Source, timeout: int):
    for n, line in enumerate(src.lines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise SeedError(f"{name} line {n}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
            raise SeedError(f"{name} line {n}: expected an object with a \"url\" string")
        if not looks_like_url(obj["url"]):
            raise SeedError(f"{name} line {n}: not a URL: {obj['url'][:200]!r}")
        tags = obj.get("tags") or []
        if isinstance(tags, str):
            tags = tags.split(",")
        when = obj.get("bookmarked_at")
        when = parse_date(str(when)) if when is not None else None
        yield seed(obj["url"], obj.get("title"), [str(t) for t in tags], when)


PARSE = {"txt": parse_txt, "netscape": parse_netscape, "rss": parse_rss, "atom": parse_atom,
         "sitemap": parse_sitemap, "jsonl": parse_jsonl}


def main() -> int:
    args = parse_args(sys.argv[1:])
    if not env_bool("SEEDS_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped", "output_str": "SEEDS_ENABLED=False"})
        return 10
    forced = (args.get("parser") or os.environ.get("SEEDS_PARSER") or "auto").strip().lower()
    if forced not in PARSERS + ("auto", ""):
        msg = f"unknown parser {forced!r} (choose from auto, {', '.join(PARSERS)})"
        print(f"seeds: {msg}", file=sys.stderr)
        emit({"type": "ArchiveResult", "status": "failed", "output_str": msg, "error": msg})
        return 1
    forced = None if forced in ("auto", "") else forced
    source = args.get("source_url") or args.get("url") or ""
    if not source.strip():
        emit({"type": "ArchiveResult", "status": "noresults", "output_str": "no seeds given"})
        return 0
    timeout = env_int("SEEDS_TIMEOUT", env_int("TIMEOUT", 60))
    tmp = "urls.jsonl.tmp"
    try:
        src = read_source(source, forced, timeout)
        parser = forced or detect(src.head())
        count = write_seeds(PARSE[parser](src.name, src, timeout), tmp)
    except SeedError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        print(f"seeds: {e}", file=sys.stderr)
        emit({"type": "ArchiveResult", "status": "failed", "output_str": str(e)[:300],
              "error": str(e)})
        return 1
    os.replace(tmp, "urls.jsonl")
    # Printed only once the whole source parsed: a malformed one prints no Snapshot at all.
    with open("urls.jsonl", encoding="utf-8") as f:
        shutil.copyfileobj(f, sys.stdout, 1 << 20)
    sys.stdout.flush()
    status = "succeeded" if count else "noresults"
    emit({"type": "ArchiveResult", "status": status,
          "output_str": f"{count} seed{'' if count == 1 else 's'} from {src.name} ({parser})",
          "output_json": {"parser": parser, "source": src.name, "count": count,
                          "file": "seeds/urls.jsonl"}})
    return 0


def write_seeds(seeds, path: str) -> int:
    """Write each URL's first seed to `path` as JSONL; returns how many were written.

    Only a 16-byte digest of each URL is held to skip repeats (a set of the URLs themselves
    cost ~2x the memory at 2M lines); its title, tags and date are the first occurrence's."""
    seen: set[bytes] = set()
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for s in seeds:
            key = hashlib.blake2b(s["url"].encode("utf-8", "surrogatepass"),
                                  digest_size=16).digest()
            if key in seen:
                continue
            seen.add(key)
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
            count += 1
    return count


if __name__ == "__main__":
    sys.exit(main())
