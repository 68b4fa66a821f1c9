"""CLI side of reading the index: open a reader, print results in the asked format.

CSV goes through store.export.csv_safe: text a spreadsheet would run as a formula is
neutralised (the index holds page titles, URLs and plugin output, which strangers choose).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from archiveflow.cli.table import print_table
from archiveflow.settings import settings
from archiveflow.store.export import csv_safe
from archiveflow.store.reader import QueryError, Reader, Result

__all__ = ["QueryError", "Reader", "Result", "open_reader", "write_result"]


def open_reader(data_dir: Path, *, write: bool = False) -> Reader:
    """A Reader of `<data_dir>/index.duckdb` (through the writer if one is running), or of
    the shared index when ARCHIVEFLOW_CATALOG is set (docs/scaling.md)."""
    cfg = settings()
    if cfg.catalog:
        from archiveflow.store.lakereader import LakeReader

        return LakeReader(cfg.catalog, cfg.storage or data_dir.resolve() / "lake",
                          explicit=bool(cfg.storage), write=write)
    return Reader(data_dir.resolve() / "index.duckdb", write=write)


def write_result(res: Result, fmt: str, output: str | None) -> None:
    """Print or save a result as table, csv, json (lines) or parquet."""
    if fmt == "parquet":
        if not output:
            raise QueryError("--format parquet needs --output FILE")
        pq.write_table(res.table, output)
        return
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        if fmt == "csv":
            sink = io.BytesIO()
            pacsv.write_csv(csv_safe(res.table), sink)
            out.write(sink.getvalue().decode("utf-8"))
        elif fmt == "json":
            for row in res.table.to_pylist():
                out.write(json.dumps(row, default=str) + "\n")
        else:
            print_table(res.columns, res.rows, out)
    finally:
        if output:
            out.close()
