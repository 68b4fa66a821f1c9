"""The `archiveflow` command line: one module per group of commands, registered in app.py."""

from __future__ import annotations

from archiveflow.cli.app import main, run

__all__ = ["main", "run"]
