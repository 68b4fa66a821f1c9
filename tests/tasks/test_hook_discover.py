"""discover_hooks: names, ordering, aliases, background flags, disabled plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archiveflow.tasks.discover import discover_hooks, plugin_dirs, plugin_search_path


def _touch(folder: Path, *names: str, mode: int = 0o755) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        p = folder / name
        p.write_text("#!/bin/sh\n")
        p.chmod(mode)


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    project, user, extra = tmp_path / "project", tmp_path / "data" / "plugins", tmp_path / "x"
    _touch(project / "wget", "on_Snapshot__50_wget.py", "on_Crawl__05_wget_install.finite.bg.py")
    _touch(
        project / "chrome",
        "on_CrawlSetup__10_chrome_launch.daemon.bg.js",
        "on_Snapshot__50_a_chrome.bg.js",
        "on_Snapshot__09_chrome_tab.js",
    )
    _touch(project / "env", "on_BinaryRequest__00_install_using_env_provider.py")
    _touch(project / "_disabled", "on_Snapshot__01_hidden.py")
    _touch(project / ".git", "on_Snapshot__01_hidden.py")
    _touch(
        project / "misc",
        "README.md",
        "on_Snapshot__x_badorder.py",
        "on_Snapshot__60_notes.txt",
        "config.json",
    )
    _touch(project / "misc", "on_Snapshot__60_data.pyc", mode=0o644)
    _touch(project / "misc", "on_Snapshot__61_plain.sh", mode=0o644)
    _touch(user / "custom", "on_Snapshot__05_custom.sh")
    _touch(extra / "more", "on_Snapshot__50_0more.py")
    return project, user, extra


def test_ordering_across_folders(tmp_path: Path) -> None:
    project, user, extra = _tree(tmp_path)
    config = {"PLUGINS_PATH": str(extra)}
    path = plugin_search_path(project, tmp_path / "data", config)
    assert path == [project, user, extra]
    names = [h.path.name for h in discover_hooks("Snapshot", [project, user], config)]
    assert names == [
        "on_Snapshot__05_custom.sh",
        "on_Snapshot__09_chrome_tab.js",
        "on_Snapshot__50_0more.py",
        "on_Snapshot__50_a_chrome.bg.js",
        "on_Snapshot__50_wget.py",
        "on_Snapshot__60_notes.txt",  # executable: runs by its shebang
        "on_Snapshot__61_plain.sh",  # not executable, but runnable by extension
    ]


def test_background_flags_and_aliases(tmp_path: Path) -> None:
    project, _, _ = _tree(tmp_path)
    crawl = {h.name: h for h in discover_hooks("Crawl", [project], {})}
    assert set(crawl) == {
        "on_Crawl__05_wget_install.finite.bg",
        "on_CrawlSetup__10_chrome_launch.daemon.bg",
    }
    finite = crawl["on_Crawl__05_wget_install.finite.bg"]
    daemon = crawl["on_CrawlSetup__10_chrome_launch.daemon.bg"]
    assert finite.is_background and not finite.is_daemon and finite.order == 5
    assert daemon.is_background and daemon.is_daemon and daemon.event == "Crawl"
    assert daemon.plugin == "chrome"
    binary = discover_hooks("BinaryRequest", [project], {})
    assert [h.event for h in binary] == ["Binary"]
    assert discover_hooks("Binary", [project], {}) == binary
    snap = {h.name: h for h in discover_hooks("Snapshot", [project], {})}
    assert snap["on_Snapshot__50_a_chrome.bg"].is_background
    assert not snap["on_Snapshot__50_wget"].is_background


def test_disabled_and_allow_list(tmp_path: Path) -> None:
    project, user, _ = _tree(tmp_path)
    for off in ("false", "False", "0", "no", "OFF"):
        plugins = {h.plugin for h in discover_hooks("Snapshot", [project], {"WGET_ENABLED": off})}
        assert "wget" not in plugins and "chrome" in plugins
    on = {h.plugin for h in discover_hooks("Snapshot", [project], {"WGET_ENABLED": "True"})}
    assert "wget" in on
    allowed = discover_hooks("Snapshot", [project, user], {}, plugins=["custom", "wget"])
    assert {h.plugin for h in allowed} == {"custom", "wget"}


def test_hidden_folders_ignored_and_user_plugin_overrides(tmp_path: Path) -> None:
    project, user, _ = _tree(tmp_path)
    _touch(user / "wget", "on_Snapshot__40_my_wget.sh")
    dirs = plugin_dirs([project, user])
    assert "_disabled" not in dirs and ".git" not in dirs
    assert dirs["wget"] == user / "wget"
    wget = [h.name for h in discover_hooks("Snapshot", [project, user], {}) if h.plugin == "wget"]
    assert wget == ["on_Snapshot__40_my_wget"]


def test_missing_folders_are_fine(tmp_path: Path) -> None:
    assert discover_hooks("Snapshot", [tmp_path / "nope"], {"PLUGINS_PATH": "/nonexistent:"}) == []


def test_relative_plugins_path_gives_absolute_hook_paths(tmp_path: Path, monkeypatch: Any
                                                         ) -> None:
    """A hook runs in its own output folder: a relative PLUGINS_PATH must not reach it."""
    _touch(tmp_path / "mine" / "more", "on_Snapshot__50_more.py")
    monkeypatch.chdir(tmp_path)
    hooks = discover_hooks("Snapshot", [], {"PLUGINS_PATH": "mine"})
    assert [h.path for h in hooks] == [tmp_path / "mine" / "more" / "on_Snapshot__50_more.py"]
