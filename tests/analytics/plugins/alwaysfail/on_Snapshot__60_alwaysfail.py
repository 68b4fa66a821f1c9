#!/usr/bin/env python3
# Test hook: always fails (exit 3) with a message naming the snapshot id, so the failure
# reasons differ per snapshot but normalise to one reason.
# Inputs: --url, --snapshot-id. Outputs: nothing but stderr.
import sys

sid = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--snapshot-id=")), "?")
print(f"boom: upstream 503 for snapshot {sid} after 12 tries", file=sys.stderr)
sys.exit(3)
