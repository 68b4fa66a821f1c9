"""The snapshot and crawl hooks keep their shared helpers as marked copies, not an import.

Why copies: a hook must run by hand from its own folder with nothing else installed, and a
plugin folder copied alone into `<data>/plugins` must keep working; an import of a sibling
`_lib` folder would break both. This test keeps the copies equal instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
BASICS = re.compile(
    r"^# ---- shared by the crawl and snapshot hooks .*?^# ---- end of shared part ----$",
    re.S | re.M)
PAGE = re.compile(
    r"^# ---- shared by the hooks that read the page .*?^# ---- end of shared part ----$",
    re.S | re.M)
BROWSER = re.compile(
    r"^# ---- shared by the hooks that drive the browser .*?^# ---- end of shared part ----$",
    re.S | re.M)
PAGE_READERS = ("favicon", "htmltotext", "parse_html_urls", "title")
BROWSER_USERS = ("chrome", "screenshot", "pdf", "dom", "singlefile")
FETCHING = ("headers", "wget", "seeds", *PAGE_READERS, *BROWSER_USERS)


def _hook(plugin: str) -> str:
    (path,) = (PLUGINS / plugin).glob("on_*")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("pattern", "plugins"),
                         [(BASICS, FETCHING), (PAGE, PAGE_READERS), (BROWSER, BROWSER_USERS)],
                         ids=["basics", "page", "browser"])
def test_shared_parts_are_equal(pattern: re.Pattern[str], plugins: tuple[str, ...]) -> None:
    parts = {p: pattern.search(_hook(p)) for p in plugins}
    lost = [p for p, m in parts.items() if m is None]
    assert not lost, f"hooks lost their shared-part markers: {lost}"
    texts = {p: m.group(0) for p, m in parts.items() if m}
    first = texts[plugins[0]]
    drifted = [p for p, t in texts.items() if t != first]
    assert not drifted, f"shared part differs from {plugins[0]}'s in: {drifted}"


def test_no_helper_is_defined_twice_in_a_hook() -> None:
    for plugin in FETCHING:
        names = re.findall(r"^def (\w+)\(", _hook(plugin), re.M)
        assert len(names) == len(set(names)), (plugin, sorted(names))
