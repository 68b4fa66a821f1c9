"""Reading what a hook left: its logs (capped), its records, its files, its exit.

Everything here works from the files alone (invariant 2): the stdout log, the stderr log and
`<stem>.exit.json` (exit code, times, kill reason; written when the run is finalized).
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import secrets
import signal
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from archiveflow.store.records import (
    MAX_TEXT_LEN,
    ArchiveResultRecord,
    FinalResultStatus,
    Record,
    RecordError,
    parse_lines,
)

LOG_CAP: Final[int] = 10 * 1024 * 1024  # a finished log above this keeps head and tail
# Records are data, never capped: a run's records are read from its files PARSE_CHUNK lines
# at a time and loaded RECORD_CHUNK at a time; up to IN_MEMORY_RECORDS of them are kept
# after the first read, more are read again chunk by chunk when they are loaded (1M Tag
# records held as models took ~700 MB; a Snapshot record is ~1 KB as a model).
RECORD_CHUNK: Final[int] = 25_000
PARSE_CHUNK: Final[int] = 5_000
IN_MEMORY_RECORDS: Final[int] = 10_000
# Invalid record lines kept one by one (line + reason); past this they are counted by reason.
MAX_RECORD_ERRORS: Final[int] = 10_000
STDERR_TAIL_LINES: Final[int] = 20
STDERR_TAIL_BYTES: Final[int] = 2048
# Files the runner writes next to a hook's output, never listed as output.
OWN_SUFFIXES: Final[tuple[str, ...]] = (
    ".stdout.log",
    ".stderr.log",
    ".sh",
    ".pid",
    ".pid.tmp",
    ".exit.json",
    ".records.jsonl",
    ".records.jsonl.tmp",
)


@dataclass(frozen=True)
class HookPaths:
    """The files a hook run leaves in its plugin folder, keyed by the hook's file stem."""

    plugin_dir: Path
    stem: str

    @property
    def stdout_log(self) -> Path:
        return self.plugin_dir / f"{self.stem}.stdout.log"

    @property
    def stderr_log(self) -> Path:
        return self.plugin_dir / f"{self.stem}.stderr.log"

    @property
    def cmd_file(self) -> Path:
        return self.plugin_dir / f"{self.stem}.sh"

    @property
    def pid_file(self) -> Path:
        return self.plugin_dir / f"{self.stem}.pid"

    @property
    def exit_file(self) -> Path:
        return self.plugin_dir / f"{self.stem}.exit.json"

    @property
    def records_file(self) -> Path:
        """Every record line of a stdout log that was capped (data is never capped)."""
        return self.plugin_dir / f"{self.stem}.records.jsonl"


@dataclass
class ExitInfo:
    """How a run ended. `exit_code` None = unknown; negative = killed by that signal."""

    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    timed_out: bool = False
    kill_reason: str | None = None  # set when the run was killed for cause: it failed
    stopped: bool = False  # a daemon hook stopped at cleanup, as planned

    def write(self, path: Path) -> None:
        """Save as JSON (the record that lets the index be rebuilt from the folder)."""
        data: dict[str, Any] = dict(self.__dict__)
        for key in ("started_at", "ended_at"):
            data[key] = data[key].isoformat() if data[key] else None
        write_atomic(path, json.dumps(data))

    @classmethod
    def read(cls, path: Path) -> ExitInfo | None:
        """Load a saved ExitInfo, or None when missing or unreadable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for key in ("started_at", "ended_at"):
                data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    @property
    def duration(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


@dataclass(frozen=True)
class OutputFile:
    """One output file: path relative to the snapshot folder, size in bytes, mimetype."""

    path: str
    size: int
    mimetype: str | None


@dataclass
class HookOutcome:
    """The result of one hook run, as learned from its files."""

    status: FinalResultStatus
    output_str: str = ""
    output_json: dict[str, Any] | list[Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output_files: list[OutputFile] = field(default_factory=list)
    output_size: int = 0
    other_records: HookRecords = field(default_factory=lambda: HookRecords([]))
    record_errors: list[RecordError] = field(default_factory=list)
    invalid_records: int = 0  # every invalid line (record_errors keeps the first ones)


class HookRecords:
    """The records a run printed besides its ArchiveResult, in order: held in memory when
    few, else read again from the run's records file (or stdout log) in chunks, so that a
    hook printing millions of records is loaded whole in bounded memory.

    Iterating yields every record; `chunks()` yields lists of at most `size`; `len()` is the
    count found when the output was read; `counts` is that count by record type."""

    def __init__(self, items: list[Record] | None, source: Path | None = None,
                 count: int | None = None, counts: Counter[str] | None = None) -> None:
        self._items = items
        self._source = source
        self._count = len(items) if items is not None else (count or 0)
        self.counts: Counter[str] = counts if counts is not None else Counter(
            r.type for r in items or [])

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Record]:
        for chunk in self.chunks():
            yield from chunk

    def __repr__(self) -> str:
        return f"HookRecords({self._count} records, {dict(self.counts)})"

    def chunks(self, size: int = RECORD_CHUNK) -> Iterator[list[Record]]:
        """The records in lists of at most `size`, read from the file when not in memory."""
        if self._items is not None:
            for i in range(0, len(self._items), size):
                yield self._items[i:i + size]
            return
        if self._source is None:
            return
        batch: list[Record] = []
        for records, _errors in _parse_chunks(self._source, min(size, PARSE_CHUNK)):
            batch.extend(r for r in records if not isinstance(r, ArchiveResultRecord))
            if len(batch) >= size:
                yield batch[:size]
                batch = batch[size:]
        if batch:
            yield batch


def _record_lines(path: Path) -> Iterator[str]:
    """The lines of a runner file that may be records (start with `{`), streamed."""
    fd = open_regular(path, os.O_RDONLY)
    if fd is None:
        return
    with os.fdopen(fd, "rb") as f:
        for raw in f:
            line = raw.strip()
            if line.startswith(b"{"):
                yield line.decode("utf-8", errors="replace")


def _parse_chunks(path: Path, size: int) -> Iterator[tuple[list[Record], list[RecordError]]]:
    """Parse a records file or stdout log `size` lines at a time (parse_lines per chunk)."""
    chunk: list[str] = []
    for line in _record_lines(path):
        chunk.append(line)
        if len(chunk) >= size:
            yield parse_lines("\n".join(chunk))
            chunk = []
    if chunk:
        yield parse_lines("\n".join(chunk))


def record_source(paths: HookPaths) -> Path | None:
    """The file a run's records are read from: its records file when its stdout was capped,
    else its whole stdout log (uncut after a crash). None when neither exists."""
    for source in (paths.records_file, paths.stdout_log):
        fd = open_regular(source, os.O_RDONLY)
        if fd is not None:
            os.close(fd)
            return source
    return None


@dataclass
class RecordScan:
    """One streamed pass over a run's records: its ArchiveResults (the last one counts),
    the other records, and the invalid lines (one by one up to MAX_RECORD_ERRORS, then
    counted by reason in one summary entry)."""

    results: list[ArchiveResultRecord]
    others: HookRecords
    errors: list[RecordError]
    invalid: int = 0


def scan_records(paths: HookPaths, chunk: int = PARSE_CHUNK,
                 keep: int = IN_MEMORY_RECORDS) -> RecordScan:
    """Read every record of a run in chunks: validate them all once, keep the ArchiveResults
    and the invalid lines, and the other records themselves only when there are at most
    `keep` (else they are read again, chunk by chunk, when loaded)."""
    source = record_source(paths)
    results: list[ArchiveResultRecord] = []
    kept: list[Record] | None = []
    count = 0
    counts: Counter[str] = Counter()
    errors: list[RecordError] = []
    invalid = 0
    past: Counter[str] = Counter()  # reasons of invalid lines past MAX_RECORD_ERRORS
    if source is not None:
        for records, errs in _parse_chunks(source, chunk):
            for r in records:
                if isinstance(r, ArchiveResultRecord):
                    results = [*results[-1:], r]  # only the last one is used
                    continue
                count += 1
                counts[r.type] += 1
                if kept is not None:
                    if len(kept) < keep:
                        kept.append(r)
                    else:
                        kept = None
            for e in errs:
                invalid += 1
                if len(errors) < MAX_RECORD_ERRORS:
                    errors.append(e)
                else:
                    past[e.error] += 1
    if past:
        more = sum(past.values())
        reasons = "; ".join(f"{n} × {why}" for why, n in past.most_common(20))
        errors.append(RecordError(f"[{more} more invalid record lines, not stored one by one]",
                                  reasons[:MAX_TEXT_LEN]))
    others = HookRecords(kept, source, count, counts) if kept is not None else HookRecords(
        None, source, count, counts)
    return RecordScan(results, others, errors, invalid)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a fresh temp file and a rename.

    A hook owns the folder its runner files live in: it may plant a symlink at any name.
    The temp file is created with O_EXCL | O_NOFOLLOW under an unguessable name, and
    rename() replaces a symlink at `path` instead of writing through it.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def open_regular(path: Path, flags: int) -> int | None:
    """os.open a runner file only if it is still a regular file (not a symlink or FIFO a
    hook put in its place); a planted symlink is removed. None when there is none."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink: never follow it out of the folder
            path.unlink(missing_ok=True)
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def cap_log(path: Path, cap: int = LOG_CAP) -> bool:
    """Shrink a log above `cap` bytes to its head and tail around a marker line, in place.

    Cuts fall on line boundaries so no half JSON line is left. True if it was shrunk.
    """
    fd = open_regular(path, os.O_RDWR)
    if fd is None:
        return False
    size = os.fstat(fd).st_size
    if size <= cap:
        os.close(fd)
        return False
    half = cap // 2
    with os.fdopen(fd, "r+b") as f:
        head = f.read(half)
        nl = head.rfind(b"\n")
        head_len = nl + 1 if nl >= 0 else len(head)
        f.seek(size - half)
        tail = f.read(half)
        nl = tail.find(b"\n")
        tail = tail[nl + 1 :] if 0 <= nl < len(tail) - 1 else tail
        dropped = size - head_len - len(tail)
        marker = f"[archiveflow: log truncated, {dropped} bytes left out]\n".encode()
        f.seek(head_len)
        f.write(marker)
        f.write(tail)
        f.truncate()
    return True


def keep_records(stdout_log: Path, records_file: Path, cap: int = LOG_CAP) -> int:
    """Before a stdout log above `cap` is cut for humans, copy every line that may be a
    record (starts with `{`) to `records_file`, streaming; returns the lines kept.

    The cap is for what people read; the records are data, and a cut in the middle of them
    lost Snapshots silently (100k bookmarks gave 58k snapshots). Called after the hook's
    process group is gone, so a records file the hook planted itself is removed here."""
    tmp = records_file.with_name(records_file.name + ".tmp")
    for planted in (records_file, tmp):
        planted.unlink(missing_ok=True)
    fd = open_regular(stdout_log, os.O_RDONLY)
    if fd is None:
        return 0
    kept = 0
    with os.fdopen(fd, "rb") as src:
        if os.fstat(src.fileno()).st_size <= cap:
            return 0
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(out, "wb") as dst:
            for line in src:
                if line.lstrip().startswith(b"{"):
                    dst.write(line if line.endswith(b"\n") else line + b"\n")
                    kept += 1
    tmp.replace(records_file)
    return kept


def record_text(paths: HookPaths) -> str:
    """The whole text a run's records are parsed from (its records file when its stdout was
    capped, else its stdout log). For tools and small outputs: the pipeline streams them
    with `scan_records` instead."""
    source = record_source(paths)
    if source is None:
        return ""
    return "\n".join(_record_lines(source))


def read_bounded(path: Path, cap: int = LOG_CAP) -> bytes:
    """A log's bytes, or its head and tail when it is larger than `cap` (file untouched)."""
    fd = open_regular(path, os.O_RDONLY)
    if fd is None:
        return b""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= cap:
            return f.read()
        head = f.read(cap // 2)
        f.seek(size - cap // 2)
        return head + b"\n" + f.read()


def stderr_tail(path: Path) -> str:
    """The last ~20 lines (at most ~2 KB) of a stderr log, decoded leniently."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - STDERR_TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()[-STDERR_TAIL_LINES:]
    return "\n".join(lines).strip()


def _is_own_file(rel: str) -> bool:
    name = os.path.basename(rel)
    return os.sep not in rel and name.startswith("on_") and name.endswith(OWN_SUFFIXES)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def snapshot_files(plugin_dir: Path) -> dict[str, tuple[int, int]]:
    """Files under a plugin folder before a run: relative path → (size, mtime_ns)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, _dirs, files in os.walk(plugin_dir):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            out[os.path.relpath(full, plugin_dir)] = (st.st_size, st.st_mtime_ns)
    return out


def scan_output_files(
    plugin_dir: Path,
    snapshot_dir: Path,
    before: dict[str, tuple[int, int]] | None = None,
) -> tuple[list[OutputFile], list[str]]:
    """List a hook's output files (new or changed since `before`), never following links.

    A symlink that resolves outside the snapshot folder is removed and reported in the
    returned notes. Paths are relative to the snapshot folder.
    """
    root = os.path.realpath(snapshot_dir)
    files: list[OutputFile] = []
    notes: list[str] = []
    if os.path.islink(plugin_dir):
        return files, [f"plugin folder {plugin_dir} is a symlink: not scanned"]
    for dirpath, dirs, names in os.walk(plugin_dir):
        for name in [*names, *dirs]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, plugin_dir)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not _inside(target, root):
                    os.unlink(full)  # removes the link only, never its target
                    notes.append(f"removed symlink {rel} -> {target}: outside the snapshot folder")
                    continue
                if name in dirs:
                    continue  # os.walk does not descend into it either
            elif name in dirs or _is_own_file(rel):
                continue
            try:
                st = os.stat(full)  # inside the snapshot folder: safe to follow
                lst = os.lstat(full)
            except OSError:
                continue
            if before is not None and before.get(rel) == (lst.st_size, lst.st_mtime_ns):
                continue
            files.append(
                OutputFile(
                    path=os.path.relpath(full, snapshot_dir),
                    size=st.st_size,
                    mimetype=mimetypes.guess_type(name)[0],
                )
            )
    files.sort(key=lambda f: f.path)
    return files, notes


def _refuse_outside(value: str, base: Path, root: str, what: str, notes: list[str]) -> bool:
    """True (and a note) when path `value`, taken relative to `base`, escapes `root`."""
    target = os.path.realpath(os.path.join(base, value))
    if _inside(target, root):
        return False
    notes.append(f"refused {what} {value!r}: resolves outside the snapshot folder")
    return True


def _exit_phrase(exit: ExitInfo) -> str:
    rc, dur = exit.exit_code, exit.duration
    after = f" after {dur:.1f}s" if dur is not None else ""
    if rc is None:
        return "exit code unknown"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return f"killed by signal {name}{after}"
    return f"exited {rc}{after}"


def build_outcome(
    paths: HookPaths,
    exit: ExitInfo,
    snapshot_dir: Path,
    before: dict[str, tuple[int, int]] | None = None,
) -> HookOutcome:
    """Decide a run's result from its stdout records, its exit and its files (HOOKS.md)."""
    scan = scan_records(paths)
    printed = scan.results[-1] if scan.results else None
    files, notes = scan_output_files(paths.plugin_dir, snapshot_dir, before)
    root = os.path.realpath(snapshot_dir)

    output_str = printed.output_str if printed else ""
    if output_str and not any(c.isspace() for c in output_str):
        if _refuse_outside(output_str, snapshot_dir, root, "output_str", notes):
            output_str = ""
    listed = {f.path for f in files}
    for claimed in (printed.output_files or []) if printed else []:
        if _refuse_outside(claimed, paths.plugin_dir, root, "output file", notes):
            continue
        full = os.path.normpath(os.path.join(paths.plugin_dir, claimed))
        rel = os.path.relpath(full, snapshot_dir)
        if rel not in listed and os.path.isfile(full):
            listed.add(rel)
            size = os.path.getsize(full)
            files.append(OutputFile(rel, size, mimetypes.guess_type(full)[0]))

    status: FinalResultStatus
    errors: list[str] = []
    rc = exit.exit_code
    clean_stop = exit.stopped and rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    if exit.kill_reason or exit.timed_out:
        status = "failed"
        errors.append(exit.kill_reason or "timed out")
    elif rc == 0 or clean_stop or (rc is None and printed is not None):
        if printed is not None:
            status = printed.status
        else:
            status = "succeeded" if files else "noresults"
    elif rc == 10:
        status = "skipped"
    else:
        status = "failed"
        errors.append(_exit_phrase(exit) if rc is not None else "no result printed, exit unknown")
    if printed is not None and printed.error:
        errors.insert(0, printed.error)
    if exit.kill_reason and scan.others:
        # Whatever it printed before it was stopped is loaded; say how much, so a stopped
        # import is never mistaken for a whole one.
        errors.append(f"{len(scan.others)} records it printed before it was stopped were "
                      f"kept and loaded ({scan.invalid} invalid lines refused); any it would "
                      "have printed after were not")
    if status == "failed":
        tail = stderr_tail(paths.stderr_log)
        if tail:
            errors.append(tail)
    if status == "succeeded" and not output_str and files:
        one = len(files) == 1
        output_str = files[0].path if one else os.path.relpath(paths.plugin_dir, snapshot_dir)
    errors.extend(notes)
    error = "\n".join(errors)[:MAX_TEXT_LEN] or None
    return HookOutcome(
        status=status,
        output_str=output_str,
        output_json=printed.output_json if printed else None,
        error=error,
        exit_code=rc,
        started_at=exit.started_at,
        ended_at=exit.ended_at,
        output_files=files,
        output_size=sum(f.size for f in files),
        other_records=scan.others,
        record_errors=scan.errors,
        invalid_records=scan.invalid,
    )
