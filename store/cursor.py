"""The name callers outside store/ give the index cursor they pass back into store/.

They never call it themselves (SQL lives in store/); the alias keeps the duckdb import here.
"""

from __future__ import annotations

from typing import TypeAlias

import duckdb

Cursor: TypeAlias = duckdb.DuckDBPyConnection
