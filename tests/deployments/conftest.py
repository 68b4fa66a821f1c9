"""Fixtures for deployment tests: the session's Prefect API and the CLI runner of tests/flows."""

from __future__ import annotations

from tests.flows.conftest import run_cli  # noqa: F401  (prefect_api comes from tests/conftest.py)
