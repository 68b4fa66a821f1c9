#!/usr/bin/env python3
# Test hook (crash-resume): a service that runs until stopped (like a shared browser); logs
# its runs to $RELIABILITY_LEDGER; on SIGTERM writes svc.txt and reports success. A killed
# orchestrator leaves it running: the next archiveflow must stop it.
import json
import os
import signal
import sys
import time

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
sid, run = args.get("snapshot-id", "?"), os.environ.get("ARCHIVEFLOW_RUN_ID", "?")
ledger = os.environ.get("RELIABILITY_LEDGER")
if ledger:
    with open(ledger, "a") as f:
        f.write(f"start {sid} svc {run}\n")


def stop(signum, frame):
    with open("svc.txt", "w") as f:
        f.write(run)
    print(json.dumps({"type": "ArchiveResult", "status": "succeeded",
                      "output_str": "svc/svc.txt"}), flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
