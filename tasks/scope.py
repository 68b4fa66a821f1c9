"""Crawl scope: which links discovered while crawling are followed (`CRAWL_SCOPE`).

The names are Browsertrix Crawler's scope types, measured from the crawl's seeds (its
depth-0 URLs), so a link is in scope when it is in scope of any seed:
- `page`: no discovered link (the seeds only, whatever `--depth` says);
- `prefix`: the URL starts with a seed's URL up to its last `/` (the seed's folder);
- `host`: the same host and port as a seed (the default: a site, not the web it links to);
- `domain`: a seed's host or any subdomain of it, a leading `www.` dropped;
- `any`: every link (`--allow`/`--deny` and `--depth` still apply).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import urlsplit

SCOPES: Final[tuple[str, ...]] = ("page", "prefix", "host", "domain", "any")


class ScopeError(ValueError):
    """A CRAWL_SCOPE that is none of SCOPES."""


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    return (parts.hostname or "") + (f":{parts.port}" if parts.port else "")


def _domain(url: str) -> str:
    host = urlsplit(url).hostname or ""
    return host.removeprefix("www.")


def scope_check(scope: str, seeds: Sequence[str]) -> Callable[[str], bool] | None:
    """A predicate for discovered URLs, or None when every URL is in scope (`any`)."""
    if scope not in SCOPES:
        raise ScopeError(f"CRAWL_SCOPE must be one of {', '.join(SCOPES)}, not {scope!r}")
    if scope == "any":
        return None
    if scope == "page":
        return lambda url: False
    if scope == "host":
        hosts = {_netloc(s) for s in seeds}
        return lambda url: _netloc(url) in hosts
    if scope == "domain":
        domains = {_domain(s) for s in seeds if _domain(s)}
        return lambda url: any(
            (h := urlsplit(url).hostname or "") == d or h.endswith("." + d) for d in domains)
    prefixes = tuple({_folder(s) for s in seeds})
    return lambda url: url.startswith(prefixes)


def _folder(url: str) -> str:
    """`https://host/blog/post.html?x` -> `https://host/blog/` (`https://host` -> `…/`)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}/"
