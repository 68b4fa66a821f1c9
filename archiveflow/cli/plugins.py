"""`archiveflow plugins`: install ArchiveBox's published plugin suite (abx-plugins).

`archiveflow plugins install abx` puts a pinned abx-plugins (and the abxpkg it pins) in its
own Python >= 3.12 venv under `<data>/lib/abx/` and adds its plugins folder to the data
folder's PLUGINS_PATH (`<data>/config.json`): from then on `archiveflow add --plugins
wget,htmltotext URL` runs abx's hooks, unmodified. Installing again is a file read.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

from archiveflow.cli.common import EXIT_OK, CliError, Command, data_folder, say

SUITES = ("abx",)


def _suite(args: argparse.Namespace) -> None:
    if args.suite not in SUITES:
        raise CliError(f"unknown plugin suite {args.suite!r}; known: {', '.join(SUITES)}",
                       code=2)


def _config(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    from archiveflow.tasks.config import ConfigFileError, load_user_config, resolve_config

    try:
        user = load_user_config(folder)
    except ConfigFileError as e:
        raise CliError(f"{e}; fix or remove it") from e
    return resolve_config([], user, os.environ), dict(os.environ)


def add_plugins_path(folder: Path, plugins_dir: Path) -> bool:
    """Append `plugins_dir` to PLUGINS_PATH in `<data>/config.json`; False if already there."""
    from archiveflow.tasks.config import load_user_config

    path = folder / "config.json"
    user = load_user_config(folder)
    current = [p for p in str(user.get("PLUGINS_PATH") or "").split(":") if p.strip()]
    if any(os.path.realpath(p) == os.path.realpath(plugins_dir) for p in current):
        return False
    user["PLUGINS_PATH"] = ":".join([*current, str(plugins_dir)])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(user, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return True


def cmd_install(args: argparse.Namespace) -> int:
    from archiveflow.tasks import abx

    _suite(args)
    folder = data_folder(args).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    config, env = _config(folder)
    wheels = Path(args.wheels) if args.wheels else None
    if wheels is not None and not wheels.is_dir():
        raise CliError(f"--wheels {wheels}: no such folder; fill it with `archiveflow "
                       f"plugins download abx {wheels}` (or `make abx-wheels`)", code=2)
    try:
        target, changed = abx.install(folder / "lib", config, env, version=args.version,
                                      wheels=wheels, force=args.force)
    except abx.AbxSetupError as e:
        raise CliError(str(e)) from e
    have = target.installed() or {}
    say(f"abx-plugins {have.get('abx_plugins')} with abxpkg {have.get('abxpkg')} on Python "
        f"{have.get('python_version')} {'installed' if changed else 'already installed'} in "
        f"{target.root}")
    if add_plugins_path(folder, target.plugins_dir.absolute()):
        say(f"added {target.plugins_dir.absolute()} to PLUGINS_PATH in {folder / 'config.json'}")
    print(target.plugins_dir.absolute())
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from archiveflow.tasks import abx

    _suite(args)
    config, env = _config(data_folder(args).absolute())
    try:
        fetched = abx.download(Path(args.dest), config, env, version=args.version)
    except abx.AbxSetupError as e:
        raise CliError(str(e)) from e
    say(f"abx-plugins {args.version} wheels {'downloaded to' if fetched else 'already in'} "
        f"{args.dest}")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    return int(args.plugins_fn(args))


def _sub(parent: argparse._SubParsersAction, name: str, fn: Callable[[argparse.Namespace], int],
         helptext: str) -> argparse.ArgumentParser:
    sp = parent.add_parser(name, help=helptext, description=helptext)
    sp.add_argument("--data-dir", default=argparse.SUPPRESS,
                    help="data folder (default: $ARCHIVEFLOW_DATA_DIR or ./data)")
    sp.set_defaults(plugins_fn=fn)
    return sp


def register(command: Command) -> None:
    """Add `plugins install|download` to the archiveflow parser."""
    from archiveflow.tasks.abx import ABX_PLUGINS_VERSION

    p = command("plugins", cmd_plugins, "Install plugin suites (ArchiveBox's abx-plugins).")
    sub = p.add_subparsers(dest="plugins_command", required=True, metavar="ACTION")
    i = _sub(sub, "install", cmd_install,
             "Install a plugin suite into <data>/lib and add it to PLUGINS_PATH.")
    i.add_argument("suite", metavar="SUITE", help="abx: ArchiveBox's abx-plugins")
    i.add_argument("--version", default=ABX_PLUGINS_VERSION,
                   help=f"abx-plugins version (default: the tested {ABX_PLUGINS_VERSION})")
    i.add_argument("--wheels", metavar="DIR",
                   help="install offline from wheels in DIR (see `plugins download`)")
    i.add_argument("--force", action="store_true", help="reinstall even if installed")
    d = _sub(sub, "download", cmd_download,
             "Download a suite's wheels into a folder, for offline installs.")
    d.add_argument("suite", metavar="SUITE", help="abx: ArchiveBox's abx-plugins")
    d.add_argument("dest", metavar="DIR")
    d.add_argument("--version", default=ABX_PLUGINS_VERSION,
                   help=f"abx-plugins version (default: {ABX_PLUGINS_VERSION})")
