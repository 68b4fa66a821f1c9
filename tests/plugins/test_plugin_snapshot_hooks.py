"""Snapshot hooks run by hand against the local test site: their files, their JSONL, and
their failure paths (404, redirect, connection refused, disabled, nothing to find)."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pluginrun import HookRun, run_hook
from sitesrv import SiteServer

SITE = Path(__file__).resolve().parents[1] / "fixtures" / "site"
PHRASE = "the quick zebra of archiveflow"

Hook = Callable[..., HookRun]


# --- headers ------------------------------------------------------------------------------
def test_headers_ok(hook: Hook, site_url: str) -> None:
    run = hook("headers", f"{site_url}/")
    assert run.rc == 0 and run.result.status == "succeeded"
    assert run.result.output_str == "headers/headers.json"
    data = json.loads((run.cwd / "headers.json").read_text())
    assert data["status"] == 200 and data["redirects"] == []
    assert data["headers"]["Content-Type"].startswith("text/html")
    assert run.result.output_json["status"] == 200


def test_headers_redirect_chain(hook: Hook, site_url: str) -> None:
    run = hook("headers", f"{site_url}/redirect-chain")
    data = json.loads((run.cwd / "headers.json").read_text())
    assert data["final_url"] == f"{site_url}/page3.html"
    assert [(h["url"], h["status"]) for h in data["redirects"]] == [
        (f"{site_url}/redirect-chain", 302),
        (f"{site_url}/redirect", 302),
    ]
    assert run.result.output_json["redirects"] == 2


def test_headers_404_is_still_captured(hook: Hook, site_url: str) -> None:
    run = hook("headers", f"{site_url}/missing")
    assert run.rc == 0 and run.result.status == "succeeded"
    assert run.result.output_json["status"] == 404
    assert json.loads((run.cwd / "headers.json").read_text())["status"] == 404


def test_headers_connection_refused(hook: Hook, closed_port: int) -> None:
    run = hook("headers", f"http://127.0.0.1:{closed_port}/")
    assert run.rc == 1 and run.result.status == "failed"
    assert "connection refused" in (run.result.error or "")
    assert not (run.cwd / "headers.json").exists()


# --- wget ---------------------------------------------------------------------------------
def test_wget_page_requisites_and_warc(hook: Hook, site_url: str) -> None:
    run = hook("wget", f"{site_url}/")
    assert run.rc == 0 and run.result.status == "succeeded", run.stdout + run.stderr
    snap = run.cwd.parent
    main = snap / run.result.output_str
    assert main.is_file() and main.name == "index.html"
    assert run.result.output_str.startswith("wget/127.0.0.1+")  # restrict-file-names=windows
    host_dir = main.parent
    assert (host_dir / "style.css").is_file()
    assert (host_dir / "img" / "logo.png").read_bytes() == (SITE / "img/logo.png").read_bytes()
    assert not (host_dir / "page1.html").exists(), "no recursion: links are not followed"
    html = main.read_text()
    assert 'href="style.css"' in html  # requisites converted to the local copies
    assert f'href="{site_url}/page1.html"' in html  # the rest made absolute
    info = run.result.output_json
    assert info["http_status"] == 200 and info["exit_code"] == 0
    warc = snap / info["warc"]
    assert warc.name.endswith(".warc.gz")
    with gzip.open(warc, "rb") as f:
        body = f.read()
    assert body.startswith(b"WARC/1.0")
    # wget writes the target URI in angle brackets (as the WARC 1.0 spec's grammar showed it).
    assert f"WARC-Target-URI: <{site_url}/style.css>".encode() in body
    assert json.loads((run.cwd / "wget.json").read_text())["main_html"] == run.result.output_str


def test_wget_redirect(hook: Hook, site_url: str) -> None:
    run = hook("wget", f"{site_url}/redirect")
    assert run.result.status == "succeeded"
    assert run.result.output_json["final_url"] == f"{site_url}/page3.html"
    assert "Page Three" in (run.cwd.parent / run.result.output_str).read_text()


def test_wget_404_fails_but_keeps_the_error_page(hook: Hook, site_url: str) -> None:
    run = hook("wget", f"{site_url}/missing")
    assert run.rc == 0 and run.result.status == "failed"
    assert run.result.error == "HTTP 404 Not Found (error page and WARC kept)"
    info = run.result.output_json
    assert info["http_status"] == 404 and info["exit_code"] == 8
    assert "404" in info["note"]
    assert "Not Found" in (run.cwd.parent / run.result.output_str).read_text()


def test_wget_connection_refused(hook: Hook, closed_port: int) -> None:
    run = hook("wget", f"http://127.0.0.1:{closed_port}/")
    assert run.rc == 1 and run.result.status == "failed"
    assert "Connection refused" in (run.result.error or "")
    assert run.result.output_json["exit_code"] == 4
    assert not list((run.cwd / "warc").glob("*.warc.gz")), "an empty WARC is not kept"


def test_wget_binary_missing_and_disabled(hook: Hook, site_url: str) -> None:
    run = hook("wget", f"{site_url}/", WGET_BINARY="/nonexistent/wget")
    assert run.rc == 1 and run.result.output_str == "wget not found: run archiveflow install"
    run = hook("wget", f"{site_url}/", WGET_ENABLED="False")
    assert run.rc == 10 and run.result.status == "skipped"
    assert run.result.output_str == "WGET_ENABLED=False"


def test_wget_extra_args_reach_wget_and_a_hung_wget_is_killed(
        hook: Hook, site_url: str, tmp_path: Path) -> None:
    """The hook runs wget itself (no subprocess module): WGET_EXTRA_ARGS arrive split as a
    shell would, wget's output is read, and a wget that outlives WGET_TIMEOUT + 5 s is killed
    and the result fails naming the timeout."""
    argv_file = tmp_path / "argv.txt"
    fake = tmp_path / "bin" / "wget"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n"
                    f"for a in \"$@\"; do printf '%s\\n' \"$a\" >> {argv_file}; done\n"
                    'echo "fake wget saw $# args"\n'
                    'if [ -n "$FAKE_WGET_HANG" ]; then exec sleep 60; fi\n'
                    "exit 8\n")
    fake.chmod(0o755)
    run = hook("wget", f"{site_url}/", WGET_BINARY=str(fake),
               WGET_EXTRA_ARGS="--header='X-Test: a b' --no-cache")
    assert run.rc == 1 and run.result.status == "failed"
    assert "fake wget saw" in (run.result.error or "")
    args = argv_file.read_text().splitlines()
    assert "--header=X-Test: a b" in args and args[-2:] == ["--no-cache", f"{site_url}/"]
    started = time.monotonic()
    run = hook("wget", f"{site_url}/", WGET_BINARY=str(fake), WGET_TIMEOUT="1",
               FAKE_WGET_HANG="1")
    assert run.rc == 1 and run.result.status == "failed"
    assert run.result.output_str == "wget timed out after 6s"
    assert time.monotonic() - started < 30
    hung = subprocess.run(["pgrep", "-f", "sleep 60$"], capture_output=True, text=True)
    assert not [p for p in hung.stdout.split() if _env_has(int(p), str(fake))]


def _env_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


# --- title --------------------------------------------------------------------------------
def test_title_from_wget_html(hook: Hook, site_url: str) -> None:
    assert hook("wget", f"{site_url}/").result.status == "succeeded"
    run = hook("title", f"{site_url}/")
    assert run.result.status == "succeeded"
    assert run.result.output_str == "Archiveflow Test Site & Home"  # entity decoded
    assert run.result.output_json["source"].startswith("wget/")
    assert (run.cwd / "title.txt").read_text() == "Archiveflow Test Site & Home\n"


def test_title_fetched_when_no_wget_by_shebang(tmp_path: Path, site_url: str) -> None:
    # Run exactly as a person would from a shell: the executable itself, by its shebang.
    run = run_hook(
        "title", tmp_path / "snap", [f"--url={site_url}/page1.html", "--unknown-opt=1"],
        by_shebang=True,
    )
    assert run.rc == 0 and run.result.output_str == "Page One"
    assert run.result.output_json["source"] == f"{site_url}/page1.html"


def test_title_of_404_and_redirect(hook: Hook, site_url: str) -> None:
    assert hook("title", f"{site_url}/missing").result.output_str == "404 Not Found - Test Site"
    assert hook("title", f"{site_url}/redirect").result.output_str == "Page Three (redirect target)"


def test_title_none_is_noresults(tmp_path: Path, site_url: str) -> None:
    # A page without <title>, handed over the way wget hands pages to the later hooks.
    snap = tmp_path / "snap"
    (snap / "wget").mkdir(parents=True)
    (snap / "wget" / "page.html").write_text("<html><body><svg><title>icon</title></svg>x")
    (snap / "wget" / "wget.json").write_text(json.dumps({"main_html": "wget/page.html"}))
    run = run_hook("title", snap, [f"--url={site_url}/whatever"])
    assert run.rc == 0 and run.result.status == "noresults"
    assert not (run.cwd / "title.txt").exists()


def test_title_connection_refused(hook: Hook, closed_port: int) -> None:
    run = hook("title", f"http://127.0.0.1:{closed_port}/")
    assert run.rc == 1 and run.result.status == "failed"
    assert "connection refused" in run.result.output_str


# --- favicon ------------------------------------------------------------------------------
def test_favicon_from_link_rel_icon(hook: Hook, site_url: str) -> None:
    run = hook("favicon", f"{site_url}/")
    assert run.result.status == "succeeded" and run.result.output_str == "favicon/favicon.png"
    assert (run.cwd / "favicon.png").read_bytes() == (SITE / "img/logo.png").read_bytes()
    assert run.result.output_json["icon_url"] == f"{site_url}/img/logo.png"
    assert run.result.output_json["from_wget"] is False


def test_favicon_reuses_wget_requisite(hook: Hook, site_url: str, site_server: SiteServer) -> None:
    hook("wget", f"{site_url}/")
    before = len(site_server.requests)
    run = hook("favicon", f"{site_url}/")
    assert run.result.output_str == "favicon/favicon.png"
    assert run.result.output_json["from_wget"] is True
    assert (run.cwd / "favicon.png").read_bytes() == (SITE / "img/logo.png").read_bytes()
    assert len(site_server.requests) == before, "no second request for what wget saved"


def test_favicon_falls_back_to_favicon_ico(hook: Hook, site_url: str) -> None:
    run = hook("favicon", f"{site_url}/page1.html")
    assert run.result.output_str == "favicon/favicon.ico"
    assert (run.cwd / "favicon.ico").read_bytes() == (SITE / "favicon.ico").read_bytes()


def test_favicon_missing_is_noresults(hook: Hook, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "index.html").write_text('<title>x</title><link rel="icon" href="/gone.png">')
    with SiteServer(bare) as base:
        run = hook("favicon", f"{base}/")
    assert run.rc == 0 and run.result.status == "noresults"
    assert run.result.output_json["tried"] == [f"{base}/gone.png", f"{base}/favicon.ico"]
    assert not list(run.cwd.glob("favicon.*"))


def test_favicon_connection_refused(hook: Hook, closed_port: int) -> None:
    run = hook("favicon", f"http://127.0.0.1:{closed_port}/")
    assert run.rc == 1 and run.result.status == "failed"


# --- htmltotext ---------------------------------------------------------------------------
def test_htmltotext(hook: Hook, site_url: str) -> None:
    run = hook("htmltotext", f"{site_url}/")
    assert run.result.status == "succeeded"
    assert run.result.output_str == "htmltotext/htmltotext.txt"
    text = (run.cwd / "htmltotext.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "Welcome to the test site"
    assert "This is the home page of a small static site that archiveflow's tests crawl." in lines
    assert "Page one" in lines and "Page two (with a fragment)" in lines  # one block, one line
    assert "Home footer." in lines
    for noise in ("trackingNoise", "navigation noise", "display: none", "Archiveflow Test Site"):
        assert noise not in text
    assert PHRASE not in text


def test_htmltotext_phrase_on_exactly_one_page(hook: Hook, site_url: str) -> None:
    pages = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html"))
    assert [p for p in pages if PHRASE in (SITE / p).read_text()] == ["page2.html"]
    text = (hook("htmltotext", f"{site_url}/page2.html").cwd / "htmltotext.txt").read_text()
    assert f"Only this page mentions {PHRASE}." in text.splitlines()


def test_htmltotext_connection_refused(hook: Hook, closed_port: int) -> None:
    assert hook("htmltotext", f"http://127.0.0.1:{closed_port}/").result.status == "failed"


# --- parse_html_urls ----------------------------------------------------------------------
def test_parse_html_urls(hook: Hook, site_url: str) -> None:
    run = hook("parse_html_urls", f"{site_url}/", depth=0)
    assert run.result.status == "succeeded"
    # Resolved, fragments dropped, de-duplicated in page order; mailto:/javascript:/#top and
    # the page itself left out.
    assert [s.url for s in run.snapshots] == [
        f"{site_url}/index.html",
        f"{site_url}/page1.html",
        f"{site_url}/page2.html",
        f"{site_url}/redirect",
        f"{site_url}/missing",
    ]
    assert {s.depth for s in run.snapshots} == {1}
    assert {s.parent_snapshot_id for s in run.snapshots} == {"snap-1"}
    saved = [json.loads(line) for line in (run.cwd / "urls.jsonl").read_text().splitlines()]
    assert [r["url"] for r in saved] == [s.url for s in run.snapshots]


@pytest.mark.parametrize("with_wget", [False, True], ids=["fetched", "from-wget"])
def test_parse_html_urls_base_href(hook: Hook, site_url: str, with_wget: bool) -> None:
    if with_wget:
        hook("wget", f"{site_url}/page2.html")
    run = hook("parse_html_urls", f"{site_url}/page2.html", depth=1)
    assert [s.url for s in run.snapshots] == [
        f"{site_url}/deep/page4.html",
        f"{site_url}/index.html",
    ]
    assert run.result.output_json["source"].startswith("wget/") is with_wget
    assert {s.depth for s in run.snapshots} == {2}


def test_parse_html_urls_prints_beyond_depth_and_noresults(hook: Hook, site_url: str) -> None:
    # The hook always prints outlinks; the pipeline drops those past the crawl's max depth.
    run = hook("parse_html_urls", f"{site_url}/deep/page4.html", depth=2)
    assert [(s.url, s.depth) for s in run.snapshots] == [
        (f"{site_url}/deep/page5.html", 3),
        ("http://example.invalid/", 3),
    ]
    run = hook("parse_html_urls", f"{site_url}/deep/page5.html", depth=3)
    assert run.rc == 0 and run.result.status == "noresults" and not run.snapshots


def test_parse_html_urls_connection_refused(hook: Hook, closed_port: int) -> None:
    run = hook("parse_html_urls", f"http://127.0.0.1:{closed_port}/")
    assert run.rc == 1 and run.result.status == "failed" and not run.snapshots


# --- all foreground hooks in order, as the pipeline runs them ------------------------------
def test_foreground_hooks_in_order_share_wget_html(hook: Hook, site_url: str) -> None:
    url = f"{site_url}/redirect"
    runs = {p: hook(p, url) for p in ("headers", "wget", "title", "favicon", "htmltotext",
                                     "parse_html_urls")}
    assert {p: r.result.status for p, r in runs.items()} == dict.fromkeys(runs, "succeeded")
    assert runs["title"].result.output_str == "Page Three (redirect target)"
    for p in ("title", "htmltotext", "parse_html_urls"):
        assert runs[p].result.output_json["source"] == runs["wget"].result.output_str
    # Relative to the page after the redirect, not to /redirect.
    assert [s.url for s in runs["parse_html_urls"].snapshots] == [f"{site_url}/index.html"]


# --- timeouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("plugin", ["headers", "wget"])
def test_timeout_is_respected(hook: Hook, site_url: str, plugin: str) -> None:
    started = time.monotonic()
    run = hook(plugin, f"{site_url}/slow?s=4", **{f"{plugin.upper()}_TIMEOUT": 1})
    assert time.monotonic() - started < 3.5
    assert run.rc == 1 and run.result.status == "failed"
    assert "timed out" in (run.result.error or "").lower()
