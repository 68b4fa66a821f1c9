"""Export the index's Snapshots and ArchiveResults as JSON Lines, CSV or Parquet.

Reads go through a `Reader` (store/reader.py), so an export works while a crawl runs.
Each format writes one file per table into the output folder:
`snapshots.<ext>`, `results.<ext>` and `output_files.<ext>`.

CSV is opened by spreadsheets, which run a cell that starts with `=`, `+`, `-` or `@` (or a
tab or carriage return before one) as a formula; titles, URLs and error text come from the
pages archived and from plugin output. `csv_safe` puts an apostrophe before such text, the
usual neutralisation (OWASP "CSV injection"); numbers are left alone. `archiveflow sql
--format csv` uses it too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ExportFormat = Literal["json", "csv", "parquet"]
EXTENSIONS: Final[dict[str, str]] = {"json": "jsonl", "csv": "csv", "parquet": "parquet"}

# Each table: every column of the index table, plus the Snapshot's tags as a list.
QUERIES: Final[dict[str, str]] = {
    "snapshots": """
        SELECT s.*,
               coalesce((SELECT list(t.tag ORDER BY t.tag) FROM snapshot_tag t
                         WHERE t.snapshot_id = s.id), []::VARCHAR[]) AS tags
        FROM snapshot s
        WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
        ORDER BY s.created_at, s.id
    """,
    "results": """
        SELECT a.* FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id
        WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
        ORDER BY a.snapshot_id, a.hook_name
    """,
    "output_files": """
        SELECT f.* FROM output_file f
        JOIN archiveresult a ON a.id = f.archiveresult_id
        JOIN snapshot s ON s.id = a.snapshot_id
        WHERE (?::VARCHAR IS NULL OR s.crawl_id = ?)
        ORDER BY f.archiveresult_id, f.path
    """,
}

Query = Callable[[str, list[Any]], pa.Table]


def fetch_tables(query: Query, crawl_id: str | None = None) -> dict[str, pa.Table]:
    """The exported tables as Arrow, from `query(sql, params)` (e.g. a Reader's)."""
    return {name: query(sql, [crawl_id, crawl_id]) for name, sql in QUERIES.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _write_jsonl(table: pa.Table, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for batch in table.to_batches(max_chunksize=10_000):
            for row in batch.to_pylist():
                f.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")


FORMULA_START: Final[str] = r"^[=+\-@\t\r]"  # what a spreadsheet may take for a formula


def _is_text(t: pa.DataType) -> bool:
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def neutralise_formulas(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Text cells starting with =, +, -, @, tab or CR get a leading apostrophe."""
    if isinstance(col.type, pa.ExtensionType):
        col = col.cast(col.type.storage_type)
    risky = pc.match_substring_regex(col, FORMULA_START)
    quoted = pc.binary_join_element_wise(pa.scalar("'", col.type), col, pa.scalar("", col.type))
    return pc.if_else(risky, quoted, col)


def csv_safe(table: pa.Table) -> pa.Table:
    """The table as CSV can hold it and a spreadsheet can open it: list columns (tags)
    become comma-separated text, and text that looks like a formula is neutralised."""
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            col = pa.array([",".join(map(str, v)) if v else "" for v in col.to_pylist()],
                           pa.string())
        if _is_text(col.type):
            col = neutralise_formulas(col)
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def write_tables(tables: dict[str, pa.Table], fmt: ExportFormat, out_dir: Path
                 ) -> dict[str, Path]:
    """Write each table to `<out_dir>/<name>.<ext>`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, table in tables.items():
        path = out_dir / f"{name}.{EXTENSIONS[fmt]}"
        if fmt == "parquet":
            pq.write_table(table, path)
        elif fmt == "csv":
            sink = io.BytesIO()
            pacsv.write_csv(csv_safe(table), sink)
            path.write_bytes(sink.getvalue())
        else:
            _write_jsonl(table, path)
        written[name] = path
    return written


def export(query: Query, fmt: ExportFormat, out_dir: Path, crawl_id: str | None = None
           ) -> dict[str, tuple[Path, int]]:
    """Export snapshots, results and output files; returns {table: (file, rows)}."""
    tables = fetch_tables(query, crawl_id)
    files = write_tables(tables, fmt, out_dir)
    return {name: (files[name], tables[name].num_rows) for name in tables}


def export_index(reader: Any, fmt: ExportFormat, out_dir: Path, crawl_id: str | None = None
                 ) -> dict[str, tuple[Path, int]]:
    """`export` reading through a Reader (store/reader.py): directly, or via the crawl."""
    return export(lambda sql, params: reader.query(sql, params).table, fmt, out_dir, crawl_id)
