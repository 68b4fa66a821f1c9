"""The egress policy: which addresses a crawl's hooks may connect to.

Shared by the two gates: `tasks/urls.check_url` (IP literals, before a URL becomes a Snapshot,
no DNS) and the egress proxy (`tasks/egress.py`, every connection, after resolving the name).
One definition of "not public" for both, so they cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from archiveflow.settings import parse_bool

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(Exception):
    """A target the policy does not allow; the message is the reason a person can act on."""


@dataclass(frozen=True)
class Policy:
    """What one crawl's hooks may reach.

    allow_private: reach loopback/private/link-local/... addresses too (URL_ALLOW_PRIVATE).
    allow_addresses: addresses (``ip`` or ``ip:port``) reachable even though not public, e.g.
    one intranet server, without opening the whole private network.
    """

    allow_private: bool = False
    allow_addresses: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Mapping[str, str] | None) -> Policy:
        """The policy of a hook whose resolved config (or environment) is `config`."""
        cfg = config or {}
        allow = bool(parse_bool(cfg.get("URL_ALLOW_PRIVATE"), False))
        extra = cfg.get("EGRESS_ALLOW_ADDRESSES", "")
        return cls(allow, frozenset(_normal_entry(e) for e in extra.split(",") if e.strip()))


def _normal_entry(entry: str) -> str:
    """`ip` or `ip:port` (IPv6 as `[ip]:port`) in the form addresses are compared in."""
    entry = entry.strip()
    host, port = entry, ""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.lstrip(":")
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    try:
        ip = ipaddress.ip_address(host)
        if port and not 0 < int(port) < 65536:
            raise ValueError(port)
    except ValueError:
        raise ValueError(
            f"EGRESS_ALLOW_ADDRESSES: {entry!r} is not an address: list IPs or IP:port, "
            "e.g. 10.0.0.5:8080,[fd00::5]") from None
    return f"{_show(ip)}:{int(port)}" if port else _show(ip)


def _show(ip: IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def address_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address (e.g. "loopback"), or None when it is public.

    An IPv4-mapped or 6to4 IPv6 address is judged by the IPv4 address inside it.
    """
    if ip.version == 6:
        inner = ip.ipv4_mapped or ip.sixtofour  # type: ignore[union-attr]
        if inner is not None:
            return address_kind(inner)
    for kind, hit in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if hit:
            return kind
    return None if ip.is_global else "non-public"


def check_address(ip: IPAddress, port: int, policy: Policy) -> str | None:
    """The reason `policy` refuses a connection to ip:port, or None when it allows it."""
    kind = address_kind(ip)
    if kind is None or policy.allow_private:
        return None
    shown = _show(ip)
    if shown in policy.allow_addresses or f"{shown}:{port}" in policy.allow_addresses:
        return None
    return f"{kind} address {shown} refused (set URL_ALLOW_PRIVATE=true to allow)"


def resolve(host: str, port: int, policy: Policy) -> list[tuple[IPAddress, int]]:
    """The addresses of host:port that `policy` allows, in resolver order.

    Resolves like the hooks' own resolver would (getaddrinfo, so the legacy IPv4 forms
    `127.1`, `0x7f000001`, `2130706433` and `0` mean what they mean to wget and glibc).
    Raises EgressRefused when none is allowed, naming the first refused address, and
    OSError when the name does not resolve (not the policy's doing: the server is unknown).
    """
    name = host.strip("[]")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except UnicodeError as e:
        raise OSError(f"DNS lookup of {host} failed ({e})") from None
    except socket.gaierror as e:
        raise OSError(f"DNS lookup of {host} failed ({e.strerror})") from None
    allowed: list[tuple[IPAddress, int]] = []
    first_refusal = ""
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        reason = check_address(ip, port, policy)
        if reason is None:
            if (ip, port) not in allowed:
                allowed.append((ip, port))
        elif not first_refusal:
            first_refusal = reason
    if not allowed:
        raise EgressRefused(f"{host}: {first_refusal or 'no address'}")
    return allowed
