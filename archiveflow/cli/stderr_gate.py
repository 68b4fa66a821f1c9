"""A gate on this process's stderr, for `serve`: open while it runs, shut when it stops.

Prefect's Runner starts each flow run in a subprocess that writes to the inherited fd 2.
When `serve` is told to stop (SIGTERM or Ctrl-C) the Runner cancels those runs, and each of
them prints a crash report and a traceback of the cancellation (~70 lines) although nothing
went wrong: the runs end Cancelled and their logs are in the Prefect API. So fd 2 becomes a
pipe that a thread copies to the real stderr; :meth:`StderrGate.shut` stops the copying
(what is written afterwards is read and dropped, so no writer ever blocks) and says one line
of its own on the real stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading


class StderrGate:
    """fd 2 → pipe → copier thread → the real stderr, until :meth:`shut`."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._real = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read = read_fd
        self._open = True
        self._thread = threading.Thread(target=self._copy, name="stderr-gate", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        while chunk := os.read(self._read, 65536):
            if self._open:
                with contextlib.suppress(OSError):
                    os.write(self._real, chunk)

    def shut(self, line: str) -> None:
        """Stop copying, then write ``line`` to the real stderr."""
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        self._open = False
        with contextlib.suppress(OSError):
            os.write(self._real, (line.rstrip("\n") + "\n").encode())

    def restore(self) -> None:
        """Give fd 2 back to the real stderr (the copier drains what is left and ends)."""
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(self._real, 2)
