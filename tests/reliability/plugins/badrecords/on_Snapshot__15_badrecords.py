#!/usr/bin/env python3
# Hostile test hook: records of unknown types and with wrong field types, then a valid
# noresults result.
import json

for rec in [
    {"type": "Bogus", "x": 1},
    {"no_type": True},
    {"type": "Snapshot", "url": "https://example.com/", "depth": "deep"},
    {"type": "Snapshot", "url": ["not", "a", "string"]},
    {"type": "Tag"},
    {"type": "Tag", "name": {"nested": 1}},
    {"type": "ArchiveResult", "status": "excellent"},
    {"type": "ArchiveResult", "status": "succeeded", "output_str": 12},
    {"type": "Machine", "config": "not a dict"},
    {"type": "ArchiveResult", "status": "noresults", "output_str": "nothing to save"},
]:
    print(json.dumps(rec))
