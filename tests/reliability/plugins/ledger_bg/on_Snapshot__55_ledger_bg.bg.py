#!/usr/bin/env python3
# Test hook (crash-resume): a finite background hook; logs its runs to $RELIABILITY_LEDGER,
# works ~1 s beside the foreground hooks, writes bg.txt and reports success.
import json
import os
import sys
import time

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
sid, run = args.get("snapshot-id", "?"), os.environ.get("ARCHIVEFLOW_RUN_ID", "?")
ledger = os.environ.get("RELIABILITY_LEDGER")
if ledger:
    with open(ledger, "a") as f:
        f.write(f"start {sid} ledger_bg {run}\n")
time.sleep(1.0)
with open("bg.txt", "w") as f:
    f.write(run)
print(json.dumps({"type": "ArchiveResult", "status": "succeeded",
                  "output_str": "ledger_bg/bg.txt"}))
