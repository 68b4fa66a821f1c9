"""`status`, `list` and `sql`: read the index (directly, or through the running crawl)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from archiveflow.cli.common import EXIT_OK, CliError, Command, open_index, print_table


def cmd_status(args: argparse.Namespace) -> int:
    reader = open_index(args, read_only=True)
    with reader:
        for table in ("crawl", "snapshot", "archiveresult"):
            rows = reader.query(f"SELECT status, count(*) AS n FROM {table} GROUP BY status "
                                "ORDER BY status")
            print(f"{table}: " + (", ".join(f"{s} {n}" for s, n in rows.rows) or "none"))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    reader = open_index(args, read_only=True)
    sql = """
        SELECT s.id, s.url, s.title, s.status, s.created_at::VARCHAR AS created_at,
               s.depth, string_agg(a.plugin || ':' || a.status, ' ' ORDER BY a.plugin) AS results
        FROM snapshot s LEFT JOIN archiveresult a ON a.snapshot_id = s.id
        WHERE (? IS NULL OR s.crawl_id = ?)
        GROUP BY ALL ORDER BY 5 DESC LIMIT ?
    """
    with reader:
        res = reader.query(sql, [args.crawl, args.crawl, args.limit])
    if args.json:
        for row in res.rows:
            print(json.dumps(dict(zip(res.columns, row, strict=True)), default=str))
    else:
        print_table(["url", "title", "status", "results"],
                    [(r[1], r[2], r[3], r[6]) for r in res.rows])
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    from archiveflow.cli import readers

    query = args.query
    if query == "-" or query is None:
        query = sys.stdin.read()
    elif "\n" not in query and query.endswith(".sql") and Path(query).is_file():
        query = Path(query).read_text(encoding="utf-8")
    reader = open_index(args, read_only=True, write=args.write)
    with reader:
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
    q.add_argument("--write", action="store_true", help="allow statements that change data")
