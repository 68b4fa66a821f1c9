"""Errors raised by the store.

    StoreError
    ├── TerminalStoreError          retrying will not help
    │   ├── IndexLocked             another process holds index.duckdb
    │   ├── IllegalTransition       a move not allowed from the row's status
    │   ├── RowNotFound             the id names no row
    │   └── SchemaTooNew            the index was written by a newer archiveflow
    └── TransientStoreError         retry may succeed
        └── WriteConflict           two transactions updated the same row

Raw duckdb errors are mapped onto these at the store's edge (store.db.map_errors).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class TerminalStoreError(StoreError):
    """Retrying the same call will not succeed."""


class TransientStoreError(StoreError):
    """The same call may succeed if retried."""


class IndexLocked(TerminalStoreError):
    """Another process has the DuckDB index open for writing."""


class IllegalTransition(TerminalStoreError):
    """A state move that the table of legal moves does not allow."""


class RowNotFound(TerminalStoreError):
    """No row has the given id."""


class SchemaTooNew(TerminalStoreError):
    """The index's schema version is newer than this code understands."""


class WriteConflict(TransientStoreError):
    """DuckDB's optimistic concurrency rejected a concurrent update of the same row."""
