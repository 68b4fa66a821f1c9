"""The egress proxy: one local HTTP forward proxy (and CONNECT tunnel) that every crawl hook is
pointed at, so that every fetch obeys one private-network policy.

Why a proxy: a check in each plugin is a check every new plugin (and every plugin of another
suite) must remember, and it cannot see what wget, Chromium or urllib do after the first
request: redirects, requisites, DNS answers. Every one of those is a new request to the proxy,
which resolves the host itself, checks every address it would connect to, and connects to the
checked address (no second lookup, so no DNS rebinding between check and connect).

Why our own ~300 lines and not a library: proxy.py (the best kept pure-Python one) is a plugin
framework of ~15k lines with its own event loop, TLS interception and dashboard; what we need is
one policy check before connect, per-client credentials and a 403 naming the reason, which is
this module (the policy itself is tasks/egress_policy.py). It uses only the standard library
and runs in daemon threads of the process that owns the Runtime: no new process, nothing to
start before the first hook needs it.

Clients are admitted by a per-policy random token sent as proxy credentials
(``http://<token>:x@127.0.0.1:<port>``: urllib, wget and curl send it), or, for clients that
cannot send credentials (Chromium takes none in ``--proxy-server``), when the connecting socket
belongs to this process's own uid (looked up in /proc/net/tcp, as ``ss -p`` does). Any other
local account gets 407: the proxy is not an open relay.

One listener per policy (strict, allow-private, allow-private-for-some-addresses): a client
without credentials is told its policy by the port it connects to; the token of one listener is
refused on another.

A refused request gets ``403 Refused by archiveflow egress policy`` with a one-line body naming
the host, the address and the reason, and the headers ``X-Archiveflow-Egress: refused`` and
``X-Archiveflow-Egress-Reason`` (the same line, for clients that log headers, not bodies). A
server that does not answer (DNS, connection refused, timeout) gets ``502 Not reached by
archiveflow egress proxy`` the same way, with ``X-Archiveflow-Egress: unreachable``: hooks fail
on both instead of keeping the proxy's reply as the page.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import ipaddress
import os
import secrets
import selectors
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from archiveflow.tasks.egress_policy import EgressRefused, IPAddress, Policy, resolve

REFUSED_REASON: Final[str] = "Refused by archiveflow egress policy"
UNREACHABLE_REASON: Final[str] = "Not reached by archiveflow egress proxy"
REFUSED_HEADER: Final[str] = "X-Archiveflow-Egress"
MAX_HEAD: Final[int] = 64 * 1024
HEAD_TIMEOUT: Final[float] = 30.0
IDLE_TIMEOUT: Final[float] = 300.0
CONNECT_TIMEOUT: Final[float] = 30.0
MAX_CLIENTS: Final[int] = 512  # connections at once; more get 503 instead of a new thread
CHUNK: Final[int] = 256 * 1024
_HOP_HEADERS: Final[frozenset[bytes]] = frozenset(
    {b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive"})


def _connect(targets: Iterable[tuple[IPAddress, int]]) -> socket.socket:
    last: OSError | None = None
    for ip, port in targets:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((str(ip), port))
        except OSError as e:
            sock.close()
            last = e
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last or OSError("no address to connect to")


# --- who is connecting ------------------------------------------------------------------------

def _proc_net_hex(ip: IPAddress, port: int) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host byte order)."""
    raw = ip.packed
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return f"{words.hex().upper()}:{port:04X}"


def peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the client end of a loopback TCP connection, from /proc/net/tcp{,6}."""
    try:
        peer_ip = ipaddress.ip_address(peer[0])
        local_ip = ipaddress.ip_address(local[0])
    except ValueError:
        return None
    want = (_proc_net_hex(peer_ip, peer[1]), _proc_net_hex(local_ip, local[1]))
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 7 and (cols[1], cols[2]) == want:
                        return int(cols[7])
        except OSError:
            continue
    return None


# --- the server -------------------------------------------------------------------------------

@dataclass
class _Listener:
    policy: Policy
    sock: socket.socket
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.token}:x@127.0.0.1:{self.port}"


class EgressProxy:
    """The proxy of one process: listeners (one per policy) served by daemon threads.

    Nothing runs until the first `url()`; `close()` stops accepting and closes the listeners
    (connections in flight end on their own, bounded by the timeouts).
    """

    def __init__(self) -> None:
        self._listeners: dict[Policy, _Listener] = {}
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._uid = os.geteuid()
        self.refused = 0  # requests refused by the policy, for tests and summaries

    def url(self, policy: Policy) -> str:
        """The proxy URL (with this policy's credentials) a hook is given."""
        with self._lock:
            if self._closed:
                raise RuntimeError("egress proxy is closed")
            lst = self._listeners.get(policy)
            if lst is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                sock.listen(128)
                sock.setblocking(False)
                lst = self._listeners[policy] = _Listener(policy, sock)
                self._start()
                assert self._selector is not None
                self._selector.register(sock, selectors.EVENT_READ, lst)
                self._wake_w.send(b"x")
            return lst.url

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._accept_loop, name="egress-proxy",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close every listener."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for lst in self._listeners.values():
            lst.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        assert self._selector is not None
        sel = self._selector
        while not self._closed:
            for key, _ in sel.select(timeout=1.0):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                    continue
                lst: _Listener = key.data
                try:
                    conn, _addr = lst.sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue  # e.g. EMFILE: the client retries or fails on its side
                if not self._slots.acquire(blocking=False):
                    _reply(conn, 503, "Service Unavailable", "egress proxy: too many clients")
                    conn.close()
                    continue
                threading.Thread(target=self._serve, args=(conn, lst), daemon=True,
                                 name="egress-client").start()
        sel.close()

    def _serve(self, conn: socket.socket, lst: _Listener) -> None:
        try:
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(HEAD_TIMEOUT)
            self._handle(conn, lst)
        except OSError:
            pass  # the client went away; nothing to report to anyone
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def _admitted(self, conn: socket.socket, lst: _Listener, headers: dict[bytes, bytes]
                  ) -> bool:
        auth = headers.get(b"proxy-authorization", b"")
        scheme, _, cred = auth.partition(b" ")
        if scheme.lower() == b"basic" and cred:
            try:
                user = base64.b64decode(cred.strip(), validate=True).split(b":", 1)[0]
            except ValueError:
                user = b""
            if hmac.compare_digest(user, lst.token.encode()):
                return True
        try:
            uid = peer_uid(conn.getpeername()[:2], conn.getsockname()[:2])
        except OSError:
            return False
        return uid == self._uid

    def _handle(self, conn: socket.socket, lst: _Listener) -> None:
        head, rest = _read_head(conn)
        if head is None:
            return
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ")
        except ValueError:
            _reply(conn, 400, "Bad Request", "egress proxy: malformed request line")
            return
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if not self._admitted(conn, lst, headers):
            _reply(conn, 407, "Proxy Authentication Required",
                   "egress proxy: this proxy serves archiveflow's own hooks only",
                   {"Proxy-Authenticate": 'Basic realm="archiveflow egress"'})
            return
        if method == "CONNECT":
            host, _, port_s = target.rpartition(":")
            upstream = self._open(conn, host, port_s, lst.policy)
            if upstream is None:
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            try:
                parts = urlsplit(target)
                scheme, host, port = parts.scheme.lower(), parts.hostname or "", parts.port or 80
            except ValueError:
                scheme, host, port = "", "", 0
            if scheme != "http" or not host:
                _reply(conn, 400, "Bad Request",
                       f"egress proxy: expected an absolute http:// URL, got {target[:200]!r}")
                return
            upstream = self._open(conn, host, str(port), lst.policy)
            if upstream is None:
                return
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            out = [f"{method} {path} {version}".encode("latin-1")]
            out += [line for line in lines[1:] if line and
                    line.partition(b":")[0].strip().lower() not in _HOP_HEADERS]
            # One request per connection: the next request (a redirect, a requisite) comes
            # through a new connection and is checked again.
            out.append(b"Connection: close")
            upstream.sendall(b"\r\n".join(out) + b"\r\n\r\n")
        with upstream:
            if rest:
                upstream.sendall(rest)
            if method != "CONNECT":
                _forward_response_head(upstream, conn)
            _relay(conn, upstream)

    def _open(self, conn: socket.socket, host: str, port_s: str, policy: Policy
              ) -> socket.socket | None:
        try:
            port = int(port_s)
            if not 0 < port < 65536:
                raise ValueError(port_s)
        except ValueError:
            _reply(conn, 400, "Bad Request", f"egress proxy: bad port {port_s[:20]!r}")
            return None
        try:
            return _connect(resolve(host, port, policy))
        except EgressRefused as e:
            self.refused += 1
            _fail(conn, 403, REFUSED_REASON, "refused", f"archiveflow egress: {e}")
        except OSError as e:
            # No answer from the server is not the server's answer: say so the same way, so a
            # hook fails as it would without a proxy instead of keeping this reply as a page.
            why = "connection refused" if isinstance(e, ConnectionRefusedError) else (
                "timed out" if isinstance(e, TimeoutError) else str(e))
            _fail(conn, 502, UNREACHABLE_REASON, "unreachable",
                  f"archiveflow egress: {host}:{port}: {why}")
        return None


def _fail(conn: socket.socket, code: int, phrase: str, what: str, why: str) -> None:
    # The reason in a header too: Chromium's net log shows headers, not bodies.
    _reply(conn, code, phrase, why,
           {REFUSED_HEADER: what,
            f"{REFUSED_HEADER}-Reason": why.encode("ascii", "replace").decode()})


def _read_head(conn: socket.socket) -> tuple[bytes | None, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            _reply(conn, 431, "Request Header Fields Too Large", "egress proxy: head too long")
            return None, b""
        data = conn.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _forward_response_head(upstream: socket.socket, conn: socket.socket) -> None:
    """Pass the response head on, saying `Connection: close`: a client that thought it could
    reuse the connection would send its next request into a closed socket and wait."""
    upstream.settimeout(IDLE_TIMEOUT)
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) <= MAX_HEAD:
        data = upstream.recv(65536)
        if not data:
            break
        buf += data
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        conn.sendall(buf)  # no complete head: pass on what came, the client will complain
        return
    lines = [line for line in head.split(b"\r\n")
             if line.partition(b":")[0].strip().lower() not in _HOP_HEADERS]
    conn.sendall(b"\r\n".join([*lines, b"Connection: close", b"Proxy-Connection: close"])
                 + b"\r\n\r\n" + body)


def _reply(conn: socket.socket, code: int, reason: str, body: str,
           headers: dict[str, str] | None = None) -> None:
    data = (body + "\n").encode("utf-8")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with contextlib.suppress(OSError):
        conn.sendall(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n".encode()
            + data)


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes or nothing moves for IDLE_TIMEOUT."""
    a.setblocking(False)
    b.setblocking(False)
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while True:
            ready = sel.select(timeout=IDLE_TIMEOUT)
            if not ready:
                return
            for key, _ in ready:
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                dst: socket.socket = key.data
                try:
                    data = src.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    return
                dst.setblocking(True)
                dst.settimeout(IDLE_TIMEOUT)
                try:
                    dst.sendall(data)
                finally:
                    dst.setblocking(False)
