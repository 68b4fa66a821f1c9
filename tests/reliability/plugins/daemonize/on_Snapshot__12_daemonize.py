#!/usr/bin/env python3
# Hostile test hook: double-forks a grandchild that calls setsid (leaves the hook's process
# group and session) and would sleep 10 minutes; writes its pid to grandchild.pid, exits 0.
import os
import sys
import time

r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(r)
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(600)
        os._exit(0)
    os._exit(0)
os.close(w)
pid = os.read(r, 32).decode()
with open("grandchild.pid", "w") as f:
    f.write(pid)
sys.exit(0)
