"""Pydantic models of every JSONL record a hook may print, discriminated on `type`.

This is the one schema that the hook runtime, the loader and the tests share. Statuses are
`Literal` aliases: the one source of the status sets. store/transitions.STATUSES and the
CHECK constraints in schema.sql must list the same values (tests/store/test_statuses.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

CrawlStatus = Literal["queued", "started", "sealed"]
SnapshotStatus = Literal["queued", "started", "sealed"]
ResultStatus = Literal["queued", "started", "succeeded", "failed", "skipped", "noresults"]
FinalResultStatus = Literal["succeeded", "failed", "skipped", "noresults"]
BinaryStatus = Literal["queued", "started", "succeeded", "failed"]

FINAL_RESULT_STATUSES: Final[tuple[str, ...]] = get_args(FinalResultStatus)
# Table -> its status values, in the order of the state machine.
TABLE_STATUSES: Final[dict[str, tuple[str, ...]]] = {
    "crawl": get_args(CrawlStatus),
    "snapshot": get_args(SnapshotStatus),
    "archiveresult": get_args(ResultStatus),
    "machine_binary": get_args(BinaryStatus),
}
MAX_URL_LEN: Final[int] = 8192
MAX_TEXT_LEN: Final[int] = 64 * 1024


class _Record(BaseModel):
    # Hooks written for ArchiveBox print extra fields; keep going, ignore them.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class ArchiveResultRecord(_Record):
    """The outcome of one hook run."""

    type: Literal["ArchiveResult"]
    status: FinalResultStatus
    output_str: str = Field(default="", max_length=MAX_TEXT_LEN)
    output_json: dict[str, Any] | list[Any] | None = None
    error: str | None = Field(default=None, max_length=MAX_TEXT_LEN)
    # Optional list of files the hook claims as its output, relative to its folder.
    output_files: list[str] | None = None


class SnapshotRecord(_Record):
    """A URL discovered by a hook (seed parsing, outlinks) to archive as a Snapshot."""

    type: Literal["Snapshot"]
    url: str = Field(min_length=1, max_length=MAX_URL_LEN)
    depth: int | None = Field(default=None, ge=0)
    title: str | None = Field(default=None, max_length=MAX_TEXT_LEN)
    tags: list[str] | str | None = None
    bookmarked_at: datetime | None = None
    parent_snapshot_id: str | None = None

    @field_validator("tags")
    @classmethod
    def _split_tags(cls, v: list[str] | str | None) -> list[str] | None:
        if v is None:
            return None
        items = v.split(",") if isinstance(v, str) else v
        return [t.strip() for t in items if t and t.strip()]

    def tag_list(self) -> list[str]:
        """Tags as a list (empty when none)."""
        return list(self.tags or [])


class TagRecord(_Record):
    """A tag for the snapshot the hook ran on."""

    type: Literal["Tag"]
    name: str = Field(min_length=1, max_length=256)


class BinaryRecord(_Record):
    """A binary a provider hook found or installed (or a manifest line declaring a need)."""

    type: Literal["Binary"]
    name: str = Field(min_length=1, max_length=256)
    abspath: str | None = None
    version: str | None = None
    sha256: str | None = None
    binprovider: str | None = None
    bin_providers: str | None = None
    overrides: dict[str, Any] | None = None


class MachineRecord(_Record):
    """A patch to this machine's config (e.g. a resolved WGET_BINARY)."""

    type: Literal["Machine"]
    config: dict[str, Any] = Field(default_factory=dict)


class CrawlRecord(_Record):
    """A patch to the running crawl (label, config) printed by an on_Crawl hook."""

    type: Literal["Crawl"]
    label: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


Record = Annotated[
    ArchiveResultRecord | SnapshotRecord | TagRecord | BinaryRecord | MachineRecord | CrawlRecord,
    Field(discriminator="type"),
]
_ADAPTER: Final[TypeAdapter[Record]] = TypeAdapter(Record)
KNOWN_TYPES: Final[frozenset[str]] = frozenset(
    {"ArchiveResult", "Snapshot", "Tag", "Binary", "Machine", "Crawl"}
)


@dataclass(frozen=True)
class RecordError:
    """A line that was a JSON object but not a valid record, with the reason."""

    line: str
    error: str


def parse_record(obj: dict[str, Any]) -> Record:
    """Validate one decoded JSON object as a record (raises ValidationError)."""
    return _ADAPTER.validate_python(obj)


def _reason(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def parse_lines(text: str) -> tuple[list[Record], list[RecordError]]:
    """Parse hook stdout: JSON-object lines become records; invalid objects become errors.

    Lines that are not JSON objects (progress text, garbage, half lines) are ignored here;
    they stay in the hook's stdout log.
    """
    records: list[Record] = []
    errors: list[RecordError] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        short = line if len(line) <= 500 else line[:500] + "…"
        if obj.get("type") not in KNOWN_TYPES:
            errors.append(RecordError(short, f"unknown record type {obj.get('type')!r}"))
            continue
        try:
            records.append(parse_record(obj))
        except ValidationError as e:
            errors.append(RecordError(short, f"{obj.get('type')} record invalid: {_reason(e)}"))
    return records, errors
