#!/usr/bin/env python3
# Test hook: print MANYTAGS_COUNT distinct Tag records (t0000000, t0000001, ...) for the
# snapshot, then one succeeded ArchiveResult. Records are data: every one must be loaded.
# Inputs: MANYTAGS_COUNT. Outputs: stdout records only.
import os
import sys

count = int(os.environ.get("MANYTAGS_COUNT") or 1_000_000)
write = sys.stdout.write
for i in range(count):
    write('{"type":"Tag","name":"t%07d"}\n' % i)
write('{"type":"ArchiveResult","status":"succeeded","output_str":"%d tags"}\n' % count)
