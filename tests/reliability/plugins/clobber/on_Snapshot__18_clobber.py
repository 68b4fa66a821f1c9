#!/usr/bin/env python3
# Hostile test hook: plants symlinks where the runner writes its own files after the hook
# ends (exit record, pid file temp, stdout log), all pointing at
# $CLOBBER_RELIABILITY_CANARY outside the data folder, so a runner that follows them
# would overwrite or truncate it.
import os
import sys

canary = os.environ["CLOBBER_RELIABILITY_CANARY"]
stem = os.path.splitext(os.path.basename(sys.argv[0]))[0]
for suffix in (".exit.json", ".pid.tmp"):
    try:
        os.symlink(canary, stem + suffix)
    except FileExistsError:
        pass
# Swap the stdout log for a link: the runner's fd keeps writing the old file, but anything
# that reopens the log by name afterwards would touch the canary.
os.unlink(stem + ".stdout.log")
os.symlink(canary, stem + ".stdout.log")
print("hello", flush=True)
sys.exit(0)
