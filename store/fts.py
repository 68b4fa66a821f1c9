"""DuckDB's fts extension, loaded from the `duckdb-extension-fts` wheel (never downloaded).

Search needs it for `stem()` (the Porter stemmer its index uses) and, in tests and benches,
for `PRAGMA create_fts_index` as the reference. `LOAD '<path inside the wheel>'` works on
air-gapped machines; `INSTALL` is never used.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb

from archiveflow.store.errors import StoreError


class SearchError(StoreError):
    """Search is not possible (no extension file, no index yet); the message says why."""


@cache
def fts_extension_path() -> Path:
    """The `fts.duckdb_extension` file shipped in the duckdb-extension-fts wheel."""
    try:
        import duckdb_extension_fts  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise SearchError(
            f"full-text search needs the duckdb-extension-fts wheel: pip install "
            f"duckdb-extension-fts=={duckdb.__version__}") from e
    root = Path(duckdb_extension_fts.__file__).parent
    found = sorted(root.rglob("*.duckdb_extension"))
    exact = [p for p in found if f"v{duckdb.__version__}" in p.parts]
    if not (exact or found):
        raise SearchError(f"no .duckdb_extension file inside {root}")
    return (exact or found)[0]


def load_sql() -> str:
    """The statement that loads the fts extension from the wheel (no download)."""
    return f"LOAD '{str(fts_extension_path()).replace(chr(39), chr(39) * 2)}'"


def load_fts(cur: duckdb.DuckDBPyConnection) -> None:
    """Load the fts extension into this connection's database (a no-op when loaded)."""
    cur.execute(load_sql())
