"""What every command module shares: exit codes, the one-line error, the data folder,
opening the index (to write, or to read while a crawl may hold it) and a text table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from archiveflow.cli.table import print_table  # noqa: F401 - the command modules' helper
from archiveflow.settings import settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class Command(Protocol):
    """`command(name, fn, help)`: adds a subcommand; each command module's `register` gets it."""

    def __call__(self, name: str, fn: Callable[[argparse.Namespace], int], helptext: str
                 ) -> argparse.ArgumentParser: ...


class CliError(Exception):
    """A one-line error for the user; the message says what is wrong and what to do."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def data_folder(args: argparse.Namespace) -> Path:
    """`--data-dir`, else ARCHIVEFLOW_DATA_DIR, else ./data."""
    return Path(args.data_dir) if args.data_dir else settings().data_dir


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def open_index(args: argparse.Namespace, *, read_only: bool = False, write: bool = False) -> Any:
    from archiveflow.store.errors import StoreError
    from archiveflow.tasks.runtime import open_runtime

    folder = data_folder(args)
    try:
        if read_only:
            from archiveflow.cli import readers

            return readers.open_reader(folder, write=write)
        return open_runtime(folder, wait_for_lock=settings().lock_wait, on_wait=say)
    except PermissionError as e:
        raise CliError(f"{e}; choose another --data-dir or fix its permissions") from e
    except OSError as e:
        raise CliError(f"cannot use data folder {folder}: {e.strerror or e}") from e
    except StoreError as e:
        raise CliError(str(e)) from e

