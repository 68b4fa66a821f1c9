#!/usr/bin/env python3
# Hostile test hook: claims success, then dies by SIGSEGV.
import os
import signal

print('{"type":"ArchiveResult","status":"succeeded","output_str":"selfkill/none"}', flush=True)
os.kill(os.getpid(), signal.SIGSEGV)
