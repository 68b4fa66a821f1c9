"""`python -m archiveflow`: the same entry point as the `archiveflow` command."""

from __future__ import annotations

from archiveflow.cli import run

run()
