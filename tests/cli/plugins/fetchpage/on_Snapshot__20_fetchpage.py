#!/usr/bin/env python3
# Test hook: GET the URL (through the egress proxy in http_proxy) and save its body as
# page.html. An HTTP error status fails it with "HTTP <code> <reason>", the way urllib words
# it; FETCHPAGE_SAY_RETRYABLE=true adds `"retryable": false` to a failure's output_json.
# Inputs: --url. Outputs: page.html, one ArchiveResult on stdout.
import json
import os
import sys
import urllib.error
import urllib.request

url = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--url=")), "")
try:
    with urllib.request.urlopen(url, timeout=float(os.environ.get("FETCHPAGE_TIMEOUT") or 20)) as r:
        body = r.read()
except urllib.error.HTTPError as e:
    record = {"type": "ArchiveResult", "status": "failed", "output_str": f"HTTP {e.code}",
              "error": f"{url}: HTTP Error {e.code}: {e.reason}"}
    if os.environ.get("FETCHPAGE_SAY_RETRYABLE", "").lower() == "true":
        record["output_json"] = {"retryable": False, "status": e.code}
    print(json.dumps(record))
    sys.exit(1)
with open("page.html", "wb") as f:
    f.write(body)
print(json.dumps({"type": "ArchiveResult", "status": "succeeded", "output_str": "fetchpage/page.html",
                  "output_json": {"bytes": len(body)}}))
