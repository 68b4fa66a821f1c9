"""URL checks applied to every seed and discovered link before it becomes a Snapshot.

This is the cheap first gate (no DNS): it sees IP literals, the legacy IPv4 forms and
localhost. Names that resolve to private addresses, redirects and requisites are the egress
proxy's (tasks/egress.py), which every crawl hook goes through; both gates judge
addresses with tasks/egress_policy.py.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from archiveflow.tasks.egress_policy import address_kind

ALLOWED_SCHEMES: Final[frozenset[str]] = frozenset({"http", "https"})
MAX_URL_LEN: Final[int] = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Every character an IPv4 or IPv6 literal can hold (a scoped one, `fe80::1%eth0`, any after
# its `%`: such hosts always take the full check).
_IP_CHARS: Final[frozenset[str]] = frozenset("0123456789abcdefABCDEF.:[]")
# One to four dot-separated numbers, each decimal, octal (leading 0) or hex (0x): what
# inet_aton, and so glibc's getaddrinfo and wget, read as an IPv4 address (`127.1`, `0`,
# `2130706433`, `0x7f000001`, `0177.0.0.1`).
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)


def legacy_ipv4(host: str) -> str | None:
    """The dotted quad a host in one of the legacy IPv4 forms means, else None."""
    if not _LEGACY_IPV4.fullmatch(host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host.rstrip(".")))
    except OSError:
        return None  # e.g. 256.1.1.1: not an address, and getaddrinfo will not resolve it


def private_host_kind(host: str) -> str | None:
    """Why a URL's host is surely not public ("loopback", "private", ...), else None.

    Names are not resolved here (no DNS on this path): the egress proxy resolves them.
    """
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return "loopback"
    if "%" not in host and not _IP_CHARS.issuperset(host):
        return None  # a name, not an IP literal (ip_address costs ~20 µs to say so)
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return address_kind(ip)


def check_url(
    url: str, *, allow_private: bool = False, allow_file: bool = False
) -> tuple[str | None, str | None]:
    """(normalized url, None) when archivable, else (None, reason a person can act on).

    Refuses: other schemes than http(s) (file:// only with allow_file), control characters,
    over-long URLs, missing hosts, and loopback/private/link-local/... IP literals (the legacy
    IPv4 forms included) and localhost unless allow_private (config URL_ALLOW_PRIVATE). IDN
    hosts are turned into punycode, legacy IPv4 forms into the dotted quad.
    """
    raw = url.strip()
    if not raw:
        return None, "empty URL"
    if len(raw) > MAX_URL_LEN:
        return None, f"URL longer than {MAX_URL_LEN} characters"
    if _CONTROL.search(raw):
        return None, "URL contains control characters"
    if " " in raw:
        raw = raw.replace(" ", "%20")
    try:
        parts = urlsplit(raw)
    except ValueError as e:
        return None, f"malformed URL ({e})"
    scheme = parts.scheme.lower()
    if not scheme:
        return None, "no scheme (write it as https://…)"
    if scheme == "file":
        if not allow_file:
            return None, "file:// URLs are refused (set URL_ALLOW_FILE=true to allow)"
        return urlunsplit(parts._replace(scheme="file")), None
    if scheme not in ALLOWED_SCHEMES:
        return None, f"unsupported scheme {scheme}: (only http and https)"
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError as e:
        return None, f"malformed host or port ({e})"
    if not host:
        return None, "no host in URL"
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None, f"invalid international domain name {host!r}"
    dotted = legacy_ipv4(ascii_host)
    if dotted is not None:
        ascii_host = dotted  # as a browser shows it; and what it fetches is what we check
    kind = private_host_kind(ascii_host)
    if kind is not None and not allow_private:
        shown = host if dotted is None or dotted == host else f"{host} (= {dotted})"
        return None, (
            f"private-network target {shown} refused: {kind} address "
            "(set URL_ALLOW_PRIVATE=true to allow)"
        )
    netloc = ascii_host if ":" not in ascii_host else f"[{ascii_host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, parts.query, "")), None
