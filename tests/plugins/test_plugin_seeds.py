"""seeds (on_Crawl__10_parse_seeds): every importer format, by file, inline and by URL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pluginrun import HookRun, run_hook
from sitesrv import SiteServer

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"


def parse(tmp_path: Path, source: str, *extra: str, **env: str) -> HookRun:
    crawl = tmp_path / "crawl"
    args = ["--url=ignored", "--crawl-id=crawl-1", f"--source-url={source}", *extra]
    return run_hook("seeds", crawl, args, env)


def by_url(run: HookRun) -> dict[str, object]:
    assert run.rc == 0, run.stderr
    assert run.result.status == "succeeded"
    assert all(s.depth == 0 for s in run.snapshots)
    return {s.url: s for s in run.snapshots}


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


def test_netscape_bookmarks_with_nested_folders(tmp_path: Path) -> None:
    run = parse(tmp_path, str(SEEDS / "bookmarks.html"))
    seeds = by_url(run)
    # Firefox's place: smart bookmark is not a URL; everything else is, in file order.
    assert list(seeds) == [
        "https://www.python.org/",
        "https://lwn.net/Articles/1/",
        "https://example.org/deep?a=1&b=2",
        "https://news.ycombinator.com/",
    ]
    lwn = seeds["https://lwn.net/Articles/1/"]
    assert lwn.title == "LWN & friends: article one"
    assert lwn.tags == ["linux", "news", "Bookmarks bar/Reading"]
    assert lwn.bookmarked_at == when("2024-01-01T00:00:00+00:00")
    deep = seeds["https://example.org/deep?a=1&b=2"]
    assert deep.tags == ["archive", "Bookmarks bar/Reading/Deep <nested>"]
    assert deep.bookmarked_at == datetime.fromtimestamp(1710000000, UTC)
    top = seeds["https://news.ycombinator.com/"]
    assert top.title == "Hacker News" and top.tag_list() == []
    assert run.result.output_json["parser"] == "netscape"
    # What it printed is on disk too.
    assert (run.cwd / "urls.jsonl").read_text().count("\n") == 4


def test_rss(tmp_path: Path) -> None:
    seeds = by_url(parse(tmp_path, str(SEEDS / "rss.xml")))
    assert list(seeds) == [
        "https://blog.example.com/2024/01/why-we-archive",
        "https://blog.example.com/2024/02/duckdb-polars",
        "https://blog.example.com/2024/03/guid-only",  # <guid isPermaLink> when no <link>
    ]
    first = seeds["https://blog.example.com/2024/01/why-we-archive"]
    assert first.title == "Why we archive & how"
    assert first.tags == ["archiving", "web"]
    assert first.bookmarked_at == when("2024-01-15T09:30:00+00:00")
    cdata = seeds["https://blog.example.com/2024/02/duckdb-polars"]
    assert cdata.title == "DuckDB <3 polars" and cdata.tags == ["data"]
    assert seeds["https://blog.example.com/2024/03/guid-only"].bookmarked_at == when(
        "2024-03-01T17:00:00+00:00"
    )


def test_atom(tmp_path: Path) -> None:
    seeds = by_url(parse(tmp_path, str(SEEDS / "atom.xml")))
    assert list(seeds) == ["https://atom.example.com/entries/1", "https://atom.example.com/entries/2"]
    one = seeds["https://atom.example.com/entries/1"]
    assert one.title == "First entry" and one.tags == ["feeds"]
    assert one.bookmarked_at == when("2024-04-01T08:00:00+00:00")  # published, not updated
    two = seeds["https://atom.example.com/entries/2"]
    assert two.title == "Second & last"  # type="html" is unescaped once
    assert two.bookmarked_at == when("2024-04-03T10:30:00+00:00")


def test_jsonl(tmp_path: Path) -> None:
    seeds = by_url(parse(tmp_path, str(SEEDS / "seeds.jsonl")))
    assert list(seeds) == ["https://example.com/a", "https://example.com/b", "https://example.com/c"]
    a = seeds["https://example.com/a"]
    assert a.title == "Page A" and a.tags == ["one", "two"]
    assert a.bookmarked_at == when("2024-06-01T12:00:00+00:00")
    assert seeds["https://example.com/b"].tags == ["three", "four"]


def test_plain_text_file_and_inline_text(tmp_path: Path) -> None:
    seeds = by_url(parse(tmp_path, str(SEEDS / "urls.txt")))
    assert list(seeds) == [
        "https://example.com/one",
        "https://example.com/two",
        "https://example.com/three?q=1&x=2",
        "ftp://ftp.example.com/pub/file.txt",
    ]
    inline = by_url(parse(tmp_path, "see https://a.example/x. and\nhttps://b.example/y!"))
    assert list(inline) == ["https://a.example/x", "https://b.example/y"]


def test_single_url_is_its_own_seed(tmp_path: Path) -> None:
    run = run_hook("seeds", tmp_path / "c", ["--url=https://example.com/page", "--crawl-id=c"])
    assert [s.url for s in run.snapshots] == ["https://example.com/page"]


def test_sitemap_index_follows_child_sitemaps(tmp_path: Path, site_server: SiteServer) -> None:
    base = site_server.base_url
    seeds = by_url(parse(tmp_path, f"{base}/seeds/sitemap_index.xml"))
    assert list(seeds) == [f"{base}/index.html", f"{base}/page1.html", f"{base}/deep/page4.html"]
    assert seeds[f"{base}/index.html"].bookmarked_at == when("2024-05-01T00:00:00+00:00")
    assert seeds[f"{base}/page1.html"].bookmarked_at == when("2024-05-02T08:15:00+00:00")
    assert seeds[f"{base}/deep/page4.html"].bookmarked_at is None
    assert "/seeds/sitemap_deep.xml" in site_server.requests


def test_feed_fetched_by_url_and_parser_forced(tmp_path: Path, site_url: str) -> None:
    seeds = by_url(parse(tmp_path, f"{site_url}/seeds/rss.xml"))
    assert len(seeds) == 3
    # A forced parser wins over detection: the RSS file read as plain text finds every URL.
    run = parse(tmp_path, str(SEEDS / "rss.xml"), SEEDS_PARSER="txt")
    assert run.result.output_json["parser"] == "txt"
    assert "https://blog.example.com/feed.xml" in by_url(run)
    run = parse(tmp_path, str(SEEDS / "rss.xml"), "--parser=atom")
    assert run.rc == 1 and not run.snapshots


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "broken_feed.xml",
            None,
            "seeds: broken_feed.xml line 14: not well-formed (invalid token)",
        ),
        (
            "bad.jsonl",
            '{"url": "https://example.com/1"}\n{"url": "https://example.com/2",}\n',
            "seeds: bad.jsonl line 2: invalid JSON",
        ),
        (
            "nourl.jsonl",
            '{"url": "https://example.com/1"}\n{"title": "x"}\n',
            'seeds: nourl.jsonl line 2: expected an object with a "url" string',
        ),
    ],
)
def test_malformed_source_prints_no_snapshot(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = SEEDS / name
    if content is not None:
        path = tmp_path / name
        path.write_text(content)
    run = parse(tmp_path, str(path))
    assert run.rc == 1
    assert run.snapshots == [], "a malformed file must not be archived half-way"
    assert run.result.status == "failed"
    err_lines = run.stderr.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(message), run.stderr


def test_unreachable_feed_url_fails_clearly(tmp_path: Path, closed_port: int) -> None:
    run = parse(tmp_path, f"http://127.0.0.1:{closed_port}/feed.xml")
    assert run.rc == 1 and not run.snapshots
    assert "Connection refused" in run.stderr or "connection refused" in run.stderr


def test_disabled(tmp_path: Path) -> None:
    run = parse(tmp_path, "https://example.com", SEEDS_ENABLED="False")
    assert run.rc == 10 and run.result.status == "skipped" and not run.snapshots
