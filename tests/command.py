"""The installed `archiveflow` command: end-to-end tests run it as a user does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

# The console script pip put beside this interpreter (the venv's bin/), not `python -m`.
ARCHIVEFLOW: Final[str] = str(Path(sys.executable).parent / "archiveflow")
