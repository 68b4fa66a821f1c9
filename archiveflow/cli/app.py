"""`archiveflow`: the command line. One entry point; `--help` on every command.

Every command module is listed in COMMAND_MODULES below, in the order `--help` shows them;
each has `register(command)`, which adds its subcommands with `command(name, fn, help)`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

from archiveflow.cli import (
    analytics,
    binaries,
    crawl,
    plugins,
    query,
    schedule,
    server,
    update,
    worker,
)
from archiveflow.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, say
from archiveflow.settings import SettingsError, settings

COMMAND_MODULES: Final = (crawl, update, query, schedule, server, analytics, binaries, plugins,
                          worker)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every command."""
    p = argparse.ArgumentParser(
        prog="archiveflow",
        description="Archive web pages with plugin hooks; index everything in DuckDB.")
    p.add_argument("--data-dir", help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[argparse.Namespace], int], helptext: str
                ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=helptext, description=helptext)
        sp.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
        sp.set_defaults(fn=fn)
        return sp

    for module in COMMAND_MODULES:
        module.register(command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `archiveflow` command."""
    from archiveflow.store.errors import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings()  # a bad ARCHIVEFLOW_* value is a usage error before anything runs
    except SettingsError as e:
        say(f"archiveflow: {e}")
        return EXIT_USAGE
    try:
        return int(args.fn(args))
    except CliError as e:
        say(f"archiveflow: {e}")
        return e.code
    except StoreError as e:  # e.g. a query refused or failed
        say(f"archiveflow: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("archiveflow: interrupted; run `archiveflow resume` to finish the crawl")
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


_exit_code: list[int] = []


def _exit_now() -> None:
    """The last exit step of `run`: end the process without tearing down every module."""
    if not _exit_code:
        return  # main() raised: the interpreter ends as usual (and prints the traceback)
    if "logging" in sys.modules:  # its atexit handler was registered before ours
        import logging

        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_exit_code[0])


def run() -> NoReturn:
    """The `archiveflow` command (and `python -m archiveflow`): `main()`, then the exit.

    The exit runs what the interpreter runs at exit (non-daemon threads joined, the
    threading and atexit hooks: Prefect's event flush among them, logging's), then skips
    the teardown of every module object: after a crawl, with Prefect, pydantic, polars,
    pyarrow and DuckDB loaded, that teardown cost 0.5-0.7 s of CPU (a fifth of a one-page
    `add`) and wrote nothing (files are closed, the index is closed by the command)."""
    atexit.register(_exit_now)  # after logging's handler only: so it runs last but one
    code = main()
    _exit_code.append(code)
    sys.exit(code)
