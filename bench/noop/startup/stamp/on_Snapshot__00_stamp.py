#!/usr/bin/env python3
# Bench hook: appends "<event> <unix time> <parent CPU s>" to $BENCH_STAMP_FILE (else
# ./stamp.txt) as the first thing it does, so bench/run.py can time `archiveflow add` → first
# hook started, and take the CPU time (user + sys, all threads) the `add` process (this hook's
# parent) had used by then: a figure the machine's load moves much less than wall time.
import os
import sys
import time

t = time.time()
try:
    with open(f"/proc/{os.getppid()}/stat") as st:
        fields = st.read().rsplit(")", 1)[1].split()
    cpu = f" {(int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'):.3f}"
except (OSError, ValueError, IndexError):
    cpu = ""
with open(os.environ.get("BENCH_STAMP_FILE") or "stamp.txt", "a") as f:
    f.write(f"{os.path.basename(sys.argv[0]).split('__')[0]} {t:.6f}{cpu}\n")
print('{"type": "ArchiveResult", "status": "noresults", "output_str": "stamp"}')
