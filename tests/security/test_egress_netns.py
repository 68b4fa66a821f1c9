"""The default policy with a real public address, in a network namespace of the test's own.

Inside `unshare -n` the only interface is a fresh loopback; the test gives it the global
address 1.2.3.4, so "public" and "private" are both on this machine and no packet can leave
it (the namespace has no route anywhere else). There, with no allow-list and no
URL_ALLOW_PRIVATE, the wget, headers and screenshot (Chromium) hooks run by hand behind a
real egress proxy: the public page is archived, its loopback requisite and its redirect to
loopback are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PUBLIC = "1.2.3.4"
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

INSIDE = r'''
import json, os, subprocess, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from archiveflow.tasks.egress import EgressProxy
from archiveflow.tasks.egress_policy import Policy

public_ip, plugins, work = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", f"{public_ip}/32", "dev", "lo"], check=True)
seen = {"public": [], "secret": []}

def serve(name, addr, pages):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            seen[name].append(self.path)
            status, headers, body = pages.get(self.path, (404, {}, b"no"))
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
    srv = ThreadingHTTPServer((addr, 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]

sport = serve("secret", "127.0.0.1", {"/x.png": (200, {"Content-Type": "image/png"}, b"png")})
secret = f"http://127.0.0.1:{sport}"
html = f'<title>Public</title><img src="{secret}/x.png"><p>public page</p>'.encode()
pport = serve("public", public_ip, {
    "/page.html": (200, {"Content-Type": "text/html"}, html),
    "/away": (302, {"Location": f"{secret}/x.png"}, b""),
})
proxy = EgressProxy()
url = proxy.url(Policy())
env = {**os.environ, "http_proxy": url, "https_proxy": url, "no_proxy": ""}
out = {}
for plugin, path in (("wget", "/page.html"), ("headers", "/away"), ("screenshot", "/away")):
    snap = os.path.join(work, plugin)
    cwd = os.path.join(snap, plugin)
    os.makedirs(cwd)
    hook = next(p for p in os.listdir(os.path.join(plugins, plugin)) if p.startswith("on_"))
    proc = subprocess.run([sys.executable, "-S", os.path.join(plugins, plugin, hook),
                           f"--url=http://{public_ip}:{pport}{path}"], cwd=cwd,
                          env={**env, "SNAP_DIR": snap}, capture_output=True, text=True)
    out[plugin] = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
proxy.close()
print(json.dumps({"results": out, "seen": seen}))
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and ip to make a network namespace")
def test_public_address_passes_and_loopback_is_refused_in_a_namespace(tmp_path: Path) -> None:
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", INSIDE, PUBLIC, str(PLUGINS),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip(f"no network namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    wget = got["results"]["wget"][-1]
    assert wget["status"] == "succeeded", wget
    refused = wget["output_json"]["refused"]
    assert len(refused) == 1 and refused[0]["url"].endswith("/x.png"), refused
    assert "loopback address 127.0.0.1 refused" in refused[0]["reason"], refused
    headers = got["results"]["headers"][-1]
    assert headers["status"] == "failed" and "loopback" in headers["error"], headers
    shot = got["results"]["screenshot"][-1]
    assert shot["status"] == "failed" and "loopback" in shot["error"], shot
    assert not list(tmp_path.rglob("screenshot.png")), "a picture of the refusal was kept"
    public = got["seen"]["public"]
    assert public.count("/page.html") == 1 and public.count("/away") == 2, public
    assert got["seen"]["secret"] == []
