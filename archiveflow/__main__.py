"""`python -m archiveflow`: the same entry point as the `archiveflow` command."""

from __future__ import annotations

import sys

from archiveflow.cli import main

sys.exit(main())
