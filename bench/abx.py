"""ArchiveBox's own runner (abx-dl) over a list of pages, one page at a time, for comparison.

Runs with the abx venv's interpreter (abx-dl needs Python >= 3.12), not archiveflow's:

    bench/out/abx-venv/bin/python bench/abx.py --setup          # one-time: prints the commands
    bench/out/abx-venv/bin/python bench/abx.py --urls urls.txt --out DIR

abx-dl has no depth option, so bench/run.py hands it the same page list its depth-2 crawl
reaches. Each page is one `abx-dl dl --plugins=wget,favicon,htmltotext,parse_html_urls
--dir DIR/<i> URL` process, the way a user runs it (sequential: abx-dl archives one URL per
run). One untimed page first (its binary checks and first imports). Prints
`ABX-RESULT {json}`: pages, seconds, per-page seconds, statuses, and how much of the time
its hooks ran (from the Process records it prints).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

PLUGINS = "wget,favicon,htmltotext,parse_html_urls"
# abx-dl 1.13.273 is the release that pins abx-plugins 1.13.572, the suite archiveflow pins
# (tasks/abx.py): both runners then run the same hooks.
SETUP = """\
python3.12 -m venv bench/out/abx-venv
bench/out/abx-venv/bin/pip install abx-dl==1.13.273 abx-plugins==1.13.572"""


def one_page(abx_dl: Path, url: str, out: Path, timeout: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([str(abx_dl), "dl", f"--plugins={PLUGINS}", "--dir", str(out), url],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    secs = time.perf_counter() - t
    statuses: dict[str, int] = {}
    hook_secs = 0.0
    for line in proc.stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("type") == "ArchiveResult":
            statuses[rec.get("status", "?")] = statuses.get(rec.get("status", "?"), 0) + 1
        elif rec.get("type") == "Process" and rec.get("started_at") and rec.get("ended_at"):
            hook_secs += (datetime.fromisoformat(rec["ended_at"])
                          - datetime.fromisoformat(rec["started_at"])).total_seconds()
    return {"seconds": secs, "rc": proc.returncode, "statuses": statuses,
            "hook_seconds": hook_secs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--setup", action="store_true", help="print the one-time setup commands")
    ns = ap.parse_args()
    if ns.setup or not ns.urls:
        print(SETUP)
        return 0
    abx_dl = Path(sys.executable).parent / "abx-dl"
    urls = [u.strip() for u in ns.urls.read_text().splitlines() if u.strip()]
    one_page(abx_dl, urls[0], ns.out / "warmup", ns.timeout)
    pages = []
    t = time.perf_counter()
    for i, url in enumerate(urls):
        pages.append(one_page(abx_dl, url, ns.out / str(i), ns.timeout))
        print(f"abx-dl page {i}: {pages[-1]['seconds']:.1f} s {pages[-1]['statuses']}",
              file=sys.stderr, flush=True)
    total = time.perf_counter() - t
    statuses: dict[str, int] = {}
    for p in pages:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    hook = sum(p["hook_seconds"] for p in pages)
    print("ABX-RESULT " + json.dumps({
        "pages": len(pages), "seconds": total, "statuses": statuses,
        "hook_seconds": hook, "failed_runs": sum(1 for p in pages if p["rc"] != 0),
        "how": f"abx-dl dl --plugins={PLUGINS} per page, sequential; results {statuses}; "
               f"{(total - hook) / max(len(pages), 1):.2f} s/page outside its hooks",
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
