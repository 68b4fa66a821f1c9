"""URL checks applied to every seed and discovered link before it becomes a Snapshot."""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

ALLOWED_SCHEMES: Final[frozenset[str]] = frozenset({"http", "https"})
MAX_URL_LEN: Final[int] = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_private_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: not resolved here (no DNS in the hot path)
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_multicast
    )


def check_url(
    url: str, *, allow_private: bool = False, allow_file: bool = False
) -> tuple[str | None, str | None]:
    """(normalized url, None) when archivable, else (None, reason a person can act on).

    Refuses: other schemes than http(s) (file:// only with allow_file), control characters,
    over-long URLs, missing hosts, and loopback/private/link-local IP literals and localhost
    unless allow_private (config URL_ALLOW_PRIVATE). IDN hosts are turned into punycode.
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
    if not allow_private and _is_private_host(ascii_host):
        return None, (
            f"private-network target {host} refused (set URL_ALLOW_PRIVATE=true to allow)"
        )
    netloc = ascii_host if ":" not in ascii_host else f"[{ascii_host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, parts.query, "")), None
