"""Per-plugin concurrency limits ("one browser at a time") as Prefect global limits.

They are Prefect's, so they hold across every process and machine that reports to the same
API, and show (and can be changed) in the UI. A snapshot's hook walk (tasks/snapshots.run)
enters a `WalkSlots` of its own around each hook run, whatever the Prefect granularity.

In front of each Prefect limit stands a local one (`LocalSlots`: first come, first served,
as many slots as the Prefect limit has): the threads of one process queue there and only
as many as the limit allows ask Prefect. Without it they all poll Prefect, and a refused one
sleeps the server's `Retry-After` (the limit's average slot occupancy times the slots
waiting, with jitter) however soon the slot frees; and each hand-over costs a release and an
acquire on the API (seconds on a loaded machine). The browser slot sat idle more than half of
a browser crawl (bench/README.md, #16). With it, a hook run that ends while another hook of
this process waits hands that one its Prefect slot (a `Lease`, held by a thread of its own
inside Prefect's `concurrency()`) with no call to the API; the slot goes back to Prefect when
no hook of the process waits for it, or after HOLD_SECONDS of hand-overs. Other processes
and machines still wait for Prefect's slot, and the UI shows it taken while it is.
`_ARCHIVEFLOW_LOCAL_SLOTS=0` in the environment leaves the local queue out: the baseline
bench/browser.py measures it against.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Final

BROWSER_LIMIT: Final[str] = "archiveflow-browser"
DEFAULT_BROWSER_PLUGINS: Final[str] = "screenshot,chrome,pdf,dom,singlefile"

_ensured: dict[str, int] = {}  # limit name -> its size on the API when first seen
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
            _ensured[name] = await _create_if_missing(name, slots)


async def _create_if_missing(name: str, slots: int) -> int:
    """Create the limit unless it exists; its size on the API (perhaps set in the UI)."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        try:
            return int((await client.read_global_concurrency_limit_by_name(name)).limit)
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # another process won the race
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots))
            return slots
        return int((await client.read_global_concurrency_limit_by_name(name)).limit)


class Lease:
    """One slot of a Prefect limit held by this process: a thread of its own sits inside
    Prefect's `concurrency()` (which renews the lease and emits the acquired/released
    events the UI shows) until `give_back()`. So the slot can outlive the hook run that asked
    for it and pass to the next one (LocalSlots)."""

    def __init__(self, name: str) -> None:
        """Wait (Prefect's polling) until Prefect grants a slot of `name`."""
        self.name = name
        self.since = time.monotonic()
        self._granted = threading.Event()
        self._give_back = threading.Event()
        self._error: BaseException | None = None
        self._ended = False
        ctx = contextvars.copy_context()  # the caller's Prefect settings and run context
        self._thread = threading.Thread(target=ctx.run, args=(self._hold,), daemon=True,
                                        name=f"archiveflow-slot-{name}")
        self._thread.start()
        self._granted.wait()
        if self._error is not None:
            raise self._error

    def _hold(self) -> None:
        from prefect.concurrency.sync import concurrency

        try:
            with concurrency(self.name, occupy=1, strict=True):
                self.since = time.monotonic()
                self._granted.set()
                # A lease Prefect could not renew cancels this thread (strict): the wait
                # is in steps so that the cancellation is delivered.
                while not self._give_back.wait(1.0):
                    pass
        except BaseException as e:  # noqa: BLE001 - handed to the thread that waits
            if not self._granted.is_set():
                self._error = e
            else:  # the hook run holding it goes on; the next one asks Prefect again
                logging.getLogger(__name__).warning(
                    "the %s slot's Prefect lease was lost: %s", self.name, e)
        finally:
            self._ended = True
            self._granted.set()

    @property
    def usable(self) -> bool:
        """Still held, and held for less than HOLD_SECONDS (then it goes back to Prefect,
        where other processes may take it)."""
        return not self._ended and time.monotonic() - self.since < HOLD_SECONDS

    def give_back(self) -> None:
        """Release the slot on Prefect (returns once it is released)."""
        self._give_back.set()
        self._thread.join()


# How long a process may keep one Prefect slot by handing it from hook to hook before it
# gives it back to Prefect, so that other processes waiting for it get a chance.
HOLD_SECONDS: Final[float] = 30.0


class LocalSlots:
    """This process's first-come-first-served queue for one Prefect limit, as many slots as
    the limit: only the threads it lets through ask Prefect, and a hook run that ends while
    another waits here hands it its Prefect slot (its Lease) at once, with no call to the
    API. A slot no thread waits for goes back to Prefect at once.

    FIFO, not `threading.Semaphore`: a thread arriving just as a slot frees must not jump
    the queue of snapshots that have waited for it."""

    def __init__(self, name: str, slots: int) -> None:
        self.name = name
        self.slots = max(1, slots)
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting: collections.deque[Turn] = collections.deque()

    def acquire(self) -> Lease:
        """Wait for a turn here, then for Prefect unless the turn came with a slot."""
        with self._lock:
            if self._busy < self.slots and not self._waiting:
                self._busy += 1
                turn = None
            else:
                turn = Turn()
                self._waiting.append(turn)
        lease = None
        if turn is not None:
            try:
                turn.event.wait()  # release() counted us in and handed its lease over
            except BaseException:  # interrupted while queued
                with self._lock:
                    if turn in self._waiting:
                        self._waiting.remove(turn)
                        raise
                self.release(turn.lease)  # our turn had come: pass it on
                raise
            lease = turn.lease
        if lease is not None and lease.usable:
            return lease
        if lease is not None:
            lease.give_back()
        try:
            return Lease(self.name)
        except BaseException:
            self.release(None)
            raise

    def release(self, lease: Lease | None) -> None:
        """The hook run is done: its slot (and lease) to the next waiter, else to Prefect."""
        with self._lock:
            if self._waiting:
                turn = self._waiting.popleft()
                turn.lease = lease  # _busy stays: the slot passes on
                turn.event.set()
                return
            self._busy -= 1
        if lease is not None:
            lease.give_back()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        lease = self.acquire()
        try:
            yield
        finally:
            self.release(lease)


class Turn:
    """A thread waiting in LocalSlots, and the lease handed to it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lease: Lease | None = None


_local: dict[str, LocalSlots] = {}


@contextlib.contextmanager
def hook_slot(plugin: str, config: Mapping[str, str]) -> Iterator[None]:
    """Hold the plugin's global limit slot (see plugin_limit) around a hook run, or nothing.

    Synchronous: the hook walk runs in a worker thread that carries the flow's context.
    The slot comes through this process's LocalSlots for the limit (sized as the limit was
    on the API when the process first used it), or straight from Prefect when
    `_ARCHIVEFLOW_LOCAL_SLOTS=0` (bench/browser.py's baseline)."""
    limit = plugin_limit(plugin, config)
    if limit is None:
        yield
        return
    from prefect.concurrency.sync import concurrency
    from prefect.utilities.asyncutils import run_coro_as_sync

    name, slots = limit
    with _ensured_sync:
        if name not in _ensured:
            _ensured[name] = run_coro_as_sync(_create_if_missing(name, slots))
        local = _local.get(name)
        if local is None:
            local = _local[name] = LocalSlots(name, _ensured[name])
    if os.environ.get("_ARCHIVEFLOW_LOCAL_SLOTS", "1") == "0":
        with concurrency(name, occupy=1, strict=True):
            yield
        return
    with local.held():
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
