"""The egress proxy itself (tasks/egress.py): what it calls private, who may use it, what a
refusal looks like, and how a Runtime hands it to hooks. Real sockets, real processes."""

from __future__ import annotations

import base64
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitesrv import SiteServer

from archiveflow.tasks.egress import EgressProxy
from archiveflow.tasks.egress_policy import EgressRefused, Policy, address_kind, resolve
from archiveflow.tasks.runtime import open_runtime

SITE = Path(__file__).resolve().parents[1] / "fixtures" / "site"


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.1.2.3", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("240.0.0.1", "private"), ("100.64.0.1", "non-public"),
    ("8.8.8.8", None), ("2606:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "0177.0.0.1", "0",
                                  "localhost", "[::1]", "::ffff:127.0.0.1"])
def test_legacy_forms_and_names_are_resolved_then_refused(host: str) -> None:
    with pytest.raises(EgressRefused, match=r"(loopback|unspecified) address .*URL_ALLOW_PRIVATE"):
        resolve(host, 80, Policy())
    assert resolve(host, 80, Policy(allow_private=True))


def test_allow_addresses_opens_one_origin_only() -> None:
    policy = Policy(allow_addresses=frozenset({"127.0.0.1:8080"}))
    assert resolve("127.0.0.1", 8080, policy)
    with pytest.raises(EgressRefused):
        resolve("127.0.0.1", 8081, policy)
    assert Policy.from_config({"EGRESS_ALLOW_ADDRESSES": " 127.0.0.1:8080 ,"}) == policy
    assert Policy.from_config({"URL_ALLOW_PRIVATE": "True"}).allow_private
    v6 = Policy.from_config({"EGRESS_ALLOW_ADDRESSES": "[fd00:0::5]:80,fd00::6"})
    assert v6.allow_addresses == {"[fd00::5]:80", "[fd00::6]"}
    for bad in ("intranet.example", "10.0.0.5:http", "10.0.0.5:70000"):
        with pytest.raises(ValueError, match=r"EGRESS_ALLOW_ADDRESSES: .* e\.g\. "):
            Policy.from_config({"EGRESS_ALLOW_ADDRESSES": bad})


@pytest.fixture
def proxy() -> Iterator[EgressProxy]:
    p = EgressProxy()
    yield p
    p.close()


def _raw(port: int, request: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _auth(url: str) -> str:
    token = url.split("//")[1].split(":")[0]
    return base64.b64encode(f"{token}:x".encode()).decode()


def test_refusal_is_a_403_naming_the_reason(proxy: EgressProxy, site_url: str,
                                            site_server: SiteServer) -> None:
    url = proxy.url(Policy())
    port = int(url.rsplit(":", 1)[1])
    before = len(site_server.requests)
    answer = _raw(port, f"GET {site_url}/page1.html HTTP/1.1\r\nHost: x\r\n"
                        f"Proxy-Authorization: Basic {_auth(url)}\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Refused by archiveflow egress policy"), answer
    assert b"X-Archiveflow-Egress: refused" in head
    assert b"loopback address 127.0.0.1 refused (set URL_ALLOW_PRIVATE=true" in body
    tunnel = _raw(port, f"CONNECT {site_url.removeprefix('http://')} HTTP/1.1\r\n"
                        f"Proxy-Authorization: Basic {_auth(url)}\r\n\r\n")
    assert tunnel.startswith(b"HTTP/1.1 403 "), tunnel
    assert site_server.requests[before:] == []
    assert proxy.refused == 2


def test_allowed_requests_pass_and_say_connection_close(proxy: EgressProxy, site_url: str
                                                        ) -> None:
    url = proxy.url(Policy(allow_private=True))
    port = int(url.rsplit(":", 1)[1])
    answer = _raw(port, f"GET {site_url}/page1.html HTTP/1.1\r\nHost: x\r\n"
                        "Connection: keep-alive\r\n"
                        f"Proxy-Authorization: Basic {_auth(url)}\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"Connection: close" in head and b"Page One" in body


def test_connect_tunnels_what_the_policy_allows(proxy: EgressProxy, site_url: str) -> None:
    url = proxy.url(Policy(allow_private=True))
    port = int(url.rsplit(":", 1)[1])
    target = site_url.removeprefix("http://")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\n"
                  f"Proxy-Authorization: Basic {_auth(url)}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200 Connection established")
        # Any protocol rides the tunnel (TLS in real use); plain HTTP shows the bytes pass.
        s.sendall(b"GET /page1.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b"Page One" in answer


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run a client as another account")
def test_other_accounts_get_407_without_this_listeners_token(
        proxy: EgressProxy, site_url: str) -> None:
    strict = proxy.url(Policy())
    loose = proxy.url(Policy(allow_private=True))
    loose_port = loose.rsplit(":", 1)[1]
    client = ("import sys, urllib.request as u, urllib.error as e\n"
              "o = u.build_opener(u.ProxyHandler({'http': sys.argv[1]}))\n"
              "try: print(o.open(sys.argv[2], timeout=10).status)\n"
              "except e.HTTPError as x: print(x.code)\n")

    def as_nobody(proxy_url: str) -> str:
        return subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-S", "-c", client, proxy_url, f"{site_url}/page1.html"],
            capture_output=True, text=True, timeout=30).stdout.strip()

    assert as_nobody(f"http://127.0.0.1:{loose_port}") == "407"  # no credentials
    wrong = strict.replace(strict.rsplit(":", 1)[1], loose_port)  # another listener's token
    assert as_nobody(wrong) == "407"
    assert as_nobody(loose) == "200"  # the token is the credential, whoever holds it


def test_a_runtime_gives_each_crawl_its_policy_and_stops_the_proxy(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path / "data", env={**os.environ, "no_proxy": "localhost"})
    try:
        strict = rt.hook_env({"URL_ALLOW_PRIVATE": "false"}, snap_dir=tmp_path)
        loose = rt.hook_env({"URL_ALLOW_PRIVATE": "true"}, crawl_dir=tmp_path)
        again = rt.hook_env({"URL_ALLOW_PRIVATE": "false"}, crawl_dir=tmp_path)
        binary = rt.hook_env({"URL_ALLOW_PRIVATE": "false"}, binary_dir=tmp_path)
    finally:
        rt.close()
    for env in (strict, loose):
        assert env["http_proxy"] == env["HTTPS_PROXY"] == env["https_proxy"]
        assert env["no_proxy"] == env["NO_PROXY"] == ""
    assert strict["http_proxy"] != loose["http_proxy"]
    assert again["http_proxy"] == strict["http_proxy"]  # one listener per policy
    assert binary.get("no_proxy") == "localhost"  # installs keep the owner's network setup
    port = int(strict["http_proxy"].rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
