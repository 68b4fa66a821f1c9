#!/usr/bin/env python3
# Test hook (concurrency limits): stands for a browser plugin. Works ~0.4 s and writes
# interval.txt ("<start> <end>", epoch seconds) in its output folder, so a test can tell
# whether two runs of it overlapped; reports success.
import json
import time

start = time.time()
time.sleep(0.4)
with open("interval.txt", "w") as f:
    f.write(f"{start} {time.time()}")
print(json.dumps({"type": "ArchiveResult", "status": "succeeded",
                  "output_str": "fakebrowser/interval.txt"}))
