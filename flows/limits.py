"""Per-plugin concurrency limits ("one browser at a time") as Prefect global limits.

They are Prefect's, so they hold across every process and machine that reports to the same
API, and show (and can be changed) in the UI. A snapshot's hook walk (tasks/snapshots.run)
enters a `WalkSlots` of its own around each hook run, whatever the Prefect granularity.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Final

BROWSER_LIMIT: Final[str] = "archiveflow-browser"
DEFAULT_BROWSER_PLUGINS: Final[str] = "screenshot,chrome,pdf,dom,singlefile"

_ensured: set[str] = set()
_ensure_locks: dict[int, asyncio.Lock] = {}  # per event loop: a Lock is bound to one
_ensured_sync = threading.Lock()


def plugin_limit(plugin: str, config: Mapping[str, str]) -> tuple[str, int] | None:
    """(limit name, slots) of the global limit a plugin's hook runs hold, or None.

    Browser plugins (config BROWSER_PLUGINS, comma-separated) share BROWSER_LIMIT with
    BROWSER_CONCURRENCY slots (default 1): one headless browser at a time on the API."""
    names = config.get("BROWSER_PLUGINS") or DEFAULT_BROWSER_PLUGINS
    if plugin not in {p.strip() for p in names.split(",")}:
        return None
    try:
        slots = int(config.get("BROWSER_CONCURRENCY") or 1)
    except ValueError:
        slots = 1
    return BROWSER_LIMIT, max(1, slots)


async def ensure_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit `name` if the API has none by that name.

    An existing limit is left alone: its size may have been changed in the UI. Prefect's
    `concurrency()` silently does nothing for a limit that does not exist, hence this."""
    if name in _ensured:
        return
    lock = _ensure_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
    async with lock:  # the tasks of one process ask the API once, not all at once
        if name not in _ensured:
            await _create_if_missing(name, slots)
            _ensured.add(name)


async def _create_if_missing(name: str, slots: int) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another process won the race
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=slots))


@contextlib.contextmanager
def hook_slot(plugin: str, config: Mapping[str, str]) -> Iterator[None]:
    """Hold the plugin's global limit slot (see plugin_limit) around a hook run, or nothing.

    Synchronous: the hook walk runs in a worker thread that carries the flow's context."""
    limit = plugin_limit(plugin, config)
    if limit is None:
        yield
        return
    from prefect.concurrency.sync import concurrency
    from prefect.utilities.asyncutils import run_coro_as_sync

    name, slots = limit
    if name not in _ensured:
        with _ensured_sync:
            if name not in _ensured:
                run_coro_as_sync(_create_if_missing(name, slots))
                _ensured.add(name)
    with concurrency(name, occupy=1, strict=True):
        yield


class WalkSlots:
    """The global slots one snapshot's hook walk holds: a fresh one per walk.

    A background hook holds its slot until the snapshot's cleanup. Another hook of the same
    snapshot under the same limit then runs in that slot instead of asking for a second
    one, which with one slot would wait for itself forever. Other snapshots still wait.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()  # limit names this walk holds (one thread per walk)

    @contextlib.contextmanager
    def __call__(self, plugin: str, config: Mapping[str, str]) -> Iterator[None]:
        """Hold the plugin's slot around a hook run, unless this walk already holds it."""
        limit = plugin_limit(plugin, config)
        if limit is None or limit[0] in self._held:
            yield
            return
        with hook_slot(plugin, config):
            self._held.add(limit[0])
            try:
                yield
            finally:
                self._held.discard(limit[0])
