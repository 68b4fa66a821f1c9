#!/usr/bin/env python3
# Hostile test hook: prints a line, then never ends (HANG_TIMEOUT stops it).
import time

print("working...", flush=True)
while True:
    time.sleep(1)
