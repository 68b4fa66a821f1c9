#!/usr/bin/env python3
# Test hook (crash-resume): a crawl-wide service (like a shared browser) that runs until the
# crawl seals; logs its runs to $RELIABILITY_LEDGER. A killed orchestrator leaves it
# running: the next archiveflow must stop it, not start a second one beside it.
import os
import signal
import sys
import time

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
ledger = os.environ.get("RELIABILITY_LEDGER")
if ledger:
    with open(ledger, "a") as f:
        f.write(f"start {args.get('crawl-id', '?')} crawlsvc {os.environ.get('ARCHIVEFLOW_RUN_ID')}\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
