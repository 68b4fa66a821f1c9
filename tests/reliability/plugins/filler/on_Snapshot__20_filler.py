#!/usr/bin/env python3
# Test hook (full disk): writes 16 MB into its folder; on a full disk the write fails and
# the hook exits 1 with the OS error on stderr.
import json
import sys

try:
    with open("filler.bin", "wb") as f:
        for _ in range(256):
            f.write(b"\0" * 65536)
except OSError as e:
    print(f"filler: cannot write filler.bin: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"type": "ArchiveResult", "status": "succeeded",
                  "output_str": "filler/filler.bin"}))
