#!/usr/bin/env python3
# Hostile test hook: ignores SIGTERM and never ends; only SIGKILL stops it.
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("you cannot stop me", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
