"""`status`, `list` and `sql`: read the index (directly, or through the running crawl)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from archiveflow.cli.common import EXIT_OK, CliError, Command, open_index, print_table


def cmd_status(args: argparse.Namespace) -> int:
    from archiveflow.store import queries

    with open_index(args, read_only=True) as reader:
        counts = queries.status_counts(reader)
    for table, rows in counts.items():
        print(f"{table}: " + (", ".join(f"{s} {n}" for s, n in rows) or "none"))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from archiveflow.store import queries

    with open_index(args, read_only=True) as reader:
        rows = queries.list_snapshots(reader, args.crawl, args.limit)
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        print_table(["url", "title", "status", "results"],
                    [(r["url"], r["title"], r["status"], r["results"]) for r in rows])
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    from archiveflow.cli import readers

    query = args.query
    if query == "-" or query is None:
        query = sys.stdin.read()
    elif "\n" not in query and query.endswith(".sql") and Path(query).is_file():
        query = Path(query).read_text(encoding="utf-8")
    with open_index(args, read_only=True, write=args.write) as reader:
        try:
            res = reader.query(query, write=args.write)
        except readers.QueryError as e:
            raise CliError(str(e)) from e
    readers.write_result(res, args.format, args.output)
    return EXIT_OK


def register(command: Command) -> None:
    """Add `status`, `list` and `sql`."""
    command("status", cmd_status, "Crawls, snapshots and results by status.")

    ls = command("list", cmd_list, "Snapshots with title and per-plugin status.")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--crawl", help="only this crawl id")
    ls.add_argument("--limit", type=int, default=100)

    q = command("sql", cmd_sql, "Run SQL on the index (read-only unless --write).")
    q.add_argument("query", nargs="?", help="SQL text, a .sql file, or - for stdin")
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("--output", help="write to this file (required for parquet)")
    q.add_argument("--write", action="store_true",
                   help="allow statements that change data or touch files (only while no "
                        "crawl holds the index)")
