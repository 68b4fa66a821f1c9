#!/usr/bin/env python3
# Bench hook: appends "<event> <unix time>" to $BENCH_STAMP_FILE (else ./stamp.txt) as the
# first thing it does, so bench/run.py can time `archiveflow add` → first hook started.
import os
import sys
import time

t = time.time()
with open(os.environ.get("BENCH_STAMP_FILE") or "stamp.txt", "a") as f:
    f.write(f"{os.path.basename(sys.argv[0]).split('__')[0]} {t:.6f}\n")
print('{"type": "ArchiveResult", "status": "noresults", "output_str": "stamp"}')
