"""archiveflow's own settings: every `ARCHIVEFLOW_*` environment variable, in one place.

These are the process-wide knobs (where the data folder is, how Prefect is used, DuckDB's
threads). Plugin configuration (`WGET_TIMEOUT`, `URL_ALLOW_PRIVATE`, ...) is a different
thing: layered per crawl by tasks/config.py from plugin defaults, `<data>/config.json`, the
environment and `--config`.

`settings()` reads the environment each time it is called (cheap; tests and `serve` change
the environment at run time). `parse_bool` is the one truthy parser of the code base.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TRUE_WORDS: Final[frozenset[str]] = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS: Final[frozenset[str]] = frozenset({"0", "false", "no", "off", "n", "f"})


def parse_bool(value: object, default: bool | None = None) -> bool | None:
    """`true/yes/on/1` -> True, `false/no/off/0` -> False (any case); else `default`."""
    if isinstance(value, bool):
        return value
    if value is None:
        return default
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return default


class SettingsError(ValueError):
    """An `ARCHIVEFLOW_*` variable has a value that cannot be used (the message names it)."""


class SettingsValues(BaseModel):
    """archiveflow's process settings; `ARCHIVEFLOW_<FIELD>` sets each (see Settings)."""

    data_dir: Path = Field(
        default=Path("./data"),
        description="The data folder (index, outputs, the local Prefect server's home); "
                    "`--data-dir` wins over it.")
    lock_wait: float = Field(
        default=600.0, ge=0,
        description="Seconds a writing command waits for another archiveflow process that "
                    "holds the index before it gives up.")
    duckdb_threads: int | None = Field(
        default=None, ge=1,
        description="DuckDB threads of the index connection (default: DuckDB's own, the "
                    "number of cores).")
    prefect_granularity: Literal["snapshot", "task"] = Field(
        default="snapshot",
        description="`snapshot`: a Prefect task run per Snapshot, each ArchiveResult reported "
                    "as a task run under it; `task`: each Snapshot a nested flow and each "
                    "ArchiveResult a task run executed by Prefect (2-8x the orchestration "
                    "cost, bench/PREFECT.md).")
    prefect_result_runs: bool = Field(
        default=True,
        description="Report each ArchiveResult to Prefect as a task run (default granularity).")
    prefect_start_timeout: float = Field(
        default=120.0, gt=0,
        description="Seconds to wait for the local Prefect server to answer after starting it.")
    prefect_idle_exit: float = Field(
        default=600.0, ge=0,
        description="Seconds the local Prefect server stays up with no request and no crawl "
                    "or `serve` holding it; 0 = never exit.")
    prefect_ui: bool = Field(
        default=True, description="Serve the Prefect UI from the local Prefect server.")
    catalog: str | None = Field(
        default=None,
        description="Shared index (docs/scaling.md): a PostgreSQL URI (postgresql://user@host"
                    "/db) of the DuckLake catalog that every machine's archiveflow uses instead "
                    "of the embedded index.duckdb. Unset: the embedded file.")
    storage: str | None = Field(
        default=None,
        description="Shared index: where DuckLake keeps its data files, a folder every "
                    "machine mounts (or an s3:// URL); default <data folder>/lake.")
    machine_id: str | None = Field(
        default=None,
        description="This Machine's id (default: derived from /etc/machine-id); set it when "
                    "several workers share one host or the OS id is not stable.")
    lib_dir: Path | None = Field(
        default=None,
        description="Where provider hooks install binaries on this machine (default "
                    "<data folder>/lib); give each machine its own when the data folder is "
                    "shared.")

    @field_validator("prefect_granularity", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("catalog", "storage", "machine_id", "lib_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("duckdb_threads", mode="before")
    @classmethod
    def _empty_is_default(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v


class Settings(BaseSettings, SettingsValues):
    """SettingsValues read from the `ARCHIVEFLOW_<FIELD>` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ARCHIVEFLOW_", extra="ignore",
                                      case_sensitive=False)


def settings(environ: Mapping[str, str] | None = None) -> SettingsValues:
    """The settings as the environment says now (or as `environ` says: e.g. the environment
    a server process will be started with); a bad value raises SettingsError naming it."""
    try:
        if environ is None:
            return Settings()
        upper = {k.upper(): v for k, v in environ.items()}
        given = {name: upper[f"ARCHIVEFLOW_{name.upper()}"] for name in Settings.model_fields
                 if f"ARCHIVEFLOW_{name.upper()}" in upper}
        return SettingsValues.model_validate(given)  # only what `environ` holds
    except ValidationError as e:
        first = e.errors()[0]
        name = "ARCHIVEFLOW_" + "_".join(str(p) for p in first["loc"]).upper()
        raise SettingsError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
