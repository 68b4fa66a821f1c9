"""DuckDB index of the archive: schema, connection, bulk loads, state transitions, views.

No Prefect import here: the store is plain Python so that any process (CLI, flow, test,
benchmark) reaches the index the same way, and so the index can move to DuckLake by
changing the connection, not the callers.
"""
