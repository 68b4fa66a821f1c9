"""What the egress proxy costs: requests/s through it vs direct, its CPU per request, and
the time it adds to a crawl's start (creating it and opening the first listener).

    .venv/bin/python bench/egress.py [N]

The local test site and the client each run in a process of their own, so the CPU time of
this process is the proxy's alone. Ratios, not absolute numbers, are what to compare.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from archiveflow.tasks.egress import EgressProxy
from archiveflow.tasks.egress_policy import Policy

ROOT = Path(__file__).resolve().parents[1]
CLIENT = r"""
import sys, time, urllib.request, concurrent.futures as cf
url, n, threads, proxy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler(
    {"http": proxy} if proxy != "-" else {}))
def get(_):
    with opener.open(url, timeout=30) as r:
        return len(r.read())
t = time.perf_counter()
with cf.ThreadPoolExecutor(threads) as ex:
    total = sum(ex.map(get, range(n)))
print(n / (time.perf_counter() - t), total)
"""


def run_client(url: str, n: int, threads: int, proxy: str) -> float:
    out = subprocess.run([sys.executable, "-c", CLIENT, url, str(n), str(threads), proxy],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0])


def wget_page(url: str, proxy: str | None) -> None:
    """One page and its requisites with wget, as the wget hook fetches them."""
    import os
    import tempfile

    env = {**os.environ, "no_proxy": ""}
    if proxy:
        env["http_proxy"] = env["https_proxy"] = proxy
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["wget", "-q", "-p", "-e", f"use_proxy={'on' if proxy else 'off'}",
                        url], cwd=d, env=env, check=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    site = subprocess.Popen([sys.executable, str(ROOT / "tests" / "sitesrv.py")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert site.stdout is not None
        base = site.stdout.readline().strip()
        url = f"{base}/page1.html"
        t0 = time.perf_counter()
        proxy = EgressProxy()
        purl = proxy.url(Policy(allow_private=True))
        start_ms = (time.perf_counter() - t0) * 1000
        run_client(url, 50, 1, purl)  # warm both paths
        run_client(url, 50, 1, "-")
        for threads in (1, 4):
            direct = run_client(url, n, threads, "-")
            cpu0 = time.process_time()
            via = run_client(url, n, threads, purl)
            cpu = time.process_time() - cpu0
            print(f"threads={threads}: direct {direct:.0f} req/s, via proxy {via:.0f} req/s "
                  f"({via / direct:.2f}x); proxy CPU {cpu / n * 1000:.2f} ms/request")
        print(f"proxy start (create + first listener + thread): {start_ms:.2f} ms")
        pages = max(5, n // 50)
        took: dict[str, tuple[float, float]] = {}
        for label, env_proxy in (("direct", None), ("via proxy", purl)):
            cpu0, t = time.process_time(), time.perf_counter()
            for _ in range(pages):
                wget_page(f"{base}/index.html", env_proxy)
            took[label] = ((time.perf_counter() - t) / pages, (time.process_time() - cpu0) / pages)
        (d_secs, d_cpu), (p_secs, p_cpu) = took["direct"], took["via proxy"]
        # Starting wget costs this process CPU too (fork/exec): the direct run measures it.
        print(f"wget --page-requisites (page + 4 requisites): direct {d_secs * 1000:.0f} ms/page, "
              f"via proxy {p_secs * 1000:.0f} ms/page; proxy CPU {(p_cpu - d_cpu) * 1000:.2f} "
              "ms/page")
        proxy.close()
    finally:
        site.terminate()
        site.wait()


if __name__ == "__main__":
    main()
