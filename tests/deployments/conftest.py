"""Fixtures for deployment tests: the session's Prefect API and the CLI runner of tests/flows."""

from __future__ import annotations

from tests.flows.conftest import prefect_api, run_cli  # noqa: F401  (re-exported fixtures)
