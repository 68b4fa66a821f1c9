#!/usr/bin/env python3
# Bench hook: does no work, prints one ArchiveResult and exits (pure orchestration cost).
# Inputs: --url, --snapshot-id, ... (ignored). Output: one JSONL record on stdout.
import json

print(json.dumps({"type": "ArchiveResult", "status": "noresults", "output_str": "noop"}))
