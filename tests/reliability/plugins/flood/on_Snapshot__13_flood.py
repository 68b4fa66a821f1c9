#!/usr/bin/env python3
# Hostile test hook: prints 200 MB to stdout, then a result it hopes is believed.
import sys

block = (("x" * 1023 + "\n") * 1024).encode()  # 1 MB
out = sys.stdout.buffer
try:
    for _ in range(200):
        out.write(block)
    out.write(b'{"type":"ArchiveResult","status":"succeeded","output_str":"flooded"}\n')
    out.flush()
except BrokenPipeError:
    pass
