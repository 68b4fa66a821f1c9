#!/usr/bin/env python3
# Hostile test hook: tries to reach files outside the snapshot folder: symlinks to an outside
# file and folder ($RELIABILITY_CANARY), and output_str / output_files pointing outside.
import json
import os

canary = os.environ["RELIABILITY_CANARY"]
with open("real.txt", "w") as f:
    f.write("mine")
os.symlink(canary, "canary_link")
os.symlink(os.path.dirname(canary), "canary_dir_link")
os.symlink("real.txt", "inside_link")
print(json.dumps({"type": "ArchiveResult", "status": "succeeded",
                  "output_str": "../../../../../../../../" + canary.lstrip("/"),
                  "output_files": [canary, "../../../../../../../../etc/passwd", "real.txt"]}))
