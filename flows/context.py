"""The process-wide Runtime and Recorder that flows and tasks work with.

Flow and task parameters stay small and serialisable (ids, URLs) so that Prefect records
them cheaply and shows them in the UI; the heavy objects live here, one per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiveflow.tasks.recorder import Recorder
from archiveflow.tasks.runtime import Runtime, open_runtime


@dataclass
class Current:
    """The Runtime of this process, its Recorder, and per-run hand-over slots."""

    rt: Runtime
    recorder: Recorder
    slots: dict[str, Any] = field(default_factory=dict)


_lock = threading.Lock()
_current: Current | None = None


def install(rt: Runtime) -> Current:
    """Make `rt` the process's runtime (the CLI does this before starting flows)."""
    global _current
    with _lock:
        if _current is not None and _current.rt is rt:
            return _current
        _current = Current(rt, Recorder(rt.store))
        return _current


def current(data_dir: str | None = None) -> Current:
    """The installed runtime; a deployment run with no CLI opens one for `data_dir`."""
    if _current is not None:
        return _current
    if data_dir is None:
        raise RuntimeError("no archiveflow runtime in this process and no data_dir given")
    return install(open_runtime(Path(data_dir), wait_for_lock=600.0))


def uninstall() -> None:
    """Flush the recorder and forget the runtime (the index stays open for the caller)."""
    global _current
    with _lock:
        if _current is not None:
            _current.recorder.close()
            _current = None
