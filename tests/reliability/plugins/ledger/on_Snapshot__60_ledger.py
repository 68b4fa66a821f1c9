#!/usr/bin/env python3
# Test hook (crash-resume): logs every run to $RELIABILITY_LEDGER, a file outside its output
# folder, so a test can count how often each (snapshot, hook) really ran; works ~0.3 s,
# writes ledger.txt (its run id) and reports success.
import json
import os
import sys
import time

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
sid, run = args.get("snapshot-id", "?"), os.environ.get("ARCHIVEFLOW_RUN_ID", "?")
ledger = os.environ.get("RELIABILITY_LEDGER")


def note(what: str) -> None:
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"{what} {sid} ledger {run}\n")


note("start")
time.sleep(float(os.environ.get("RELIABILITY_WORK", "0.3")))
with open("ledger.txt", "w") as f:
    f.write(run)
note("done")
print(json.dumps({"type": "ArchiveResult", "status": "succeeded",
                  "output_str": "ledger/ledger.txt"}))
