"""Reading the shared index (docs/scaling.md): `archiveflow sql`/`status`/`stats` on any
machine attach the lake themselves, READ_ONLY (there is no writer to go through)."""

from __future__ import annotations

from pathlib import Path

from archiveflow.store.lake import connect, retry
from archiveflow.store.reader import Reader, WriteRefused


class LakeReader(Reader):
    """`archiveflow sql`/`status`/`stats` on the shared index: every machine reads the lake
    itself (no writer to go through), attached READ_ONLY, with the same query check as the
    embedded reader (store/readonly.py)."""

    def __init__(self, catalog: str, storage: str | Path, *, explicit: bool = False,
                 write: bool = False) -> None:
        if write:
            raise WriteRefused("`--write` is not available on the shared index: it has other "
                               "writers; change it through archiveflow's own commands")
        self.index_path = Path(str(storage))
        self.write = False
        self.via_writer = False
        self._con = retry(lambda: connect(catalog, storage, {}, explicit=explicit,
                                          read_only=True))
