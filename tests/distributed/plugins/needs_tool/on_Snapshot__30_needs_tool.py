#!/usr/bin/env python3
# Test hook: runs the `aftesttool` binary this machine resolved (AFTESTTOOL_BINARY, else the
# name on PATH) with the URL and keeps what it printed. Output: tool.txt in its cwd.
import json
import os
import subprocess
import sys

url = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--url=")), "")
tool = os.environ.get("AFTESTTOOL_BINARY") or "aftesttool"
try:
    out = subprocess.run([tool, url], capture_output=True, text=True, timeout=30, check=True)
except (OSError, subprocess.SubprocessError) as e:
    print(f"aftesttool did not run: {e}", file=sys.stderr)
    print(json.dumps({"type": "ArchiveResult", "status": "failed",
                      "output_str": f"aftesttool did not run: {e}"}))
    sys.exit(1)
with open("tool.txt", "w") as f:
    f.write(out.stdout)
print(json.dumps({"type": "ArchiveResult", "status": "succeeded", "output_str": "tool.txt"}))
