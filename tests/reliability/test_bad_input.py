"""Bad input: 200 lines of malformed and hostile URLs mixed with valid local ones.

Valid lines are archived; every other line is listed on `add`'s stderr with a reason;
file:// and private-network targets are refused unless the config allows them; tags and
URLs with SQL fragments are stored verbatim.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import PLUGINS, REPO, SEED, query, run_cli

SQL_TAG = "x'); DROP TABLE snapshot; --"
QUOTE_TAG = 'say "cheese" \'now\''


def _bad_lines(rng: random.Random) -> list[tuple[str, str]]:
    """(line, a word its refusal reason must contain). Private targets: the strict run."""
    bad = [
        ("example.com/no-scheme", "scheme"),
        ("www.example.org", "scheme"),
        ("javascript:alert(document.cookie)", "scheme"),
        ("JaVaScRiPt:alert(1)", "scheme"),
        ("data:text/html,<script>alert(1)</script>", "scheme"),
        ("file:///etc/passwd", "URL_ALLOW_FILE"),
        ("file:///etc/shadow", "URL_ALLOW_FILE"),
        ("ftp://example.com/file.txt", "scheme"),
        ("mailto:someone@example.com", "scheme"),
        ("http://example.com/" + "a" * 9000, "longer"),
        ("http://exa\x01mple.com/", "control"),
        ("http://example.com/\x7fdel", "control"),
        ("http://example.com/\x1b[31mred", "control"),
        ("http://", "host"),
        ("https://:80/", "host"),
        ("http://example.com:99999/", "malformed"),
    ]
    out = []
    while len(out) < 180:
        line, why = bad[len(out) % len(bad)]
        if rng.random() < 0.5 and why not in ("longer", "control"):
            line = f"{line}?n={len(out)}" if "://" in line and why not in ("host", "malformed") \
                else line
        out.append((line, why))
    return out


@pytest.fixture(scope="module")
def added(tmp_path_factory: pytest.TempPathFactory, site_url: str, prefect_api: str
          ) -> dict[str, Any]:
    rng = random.Random(SEED)
    root = tmp_path_factory.mktemp("badinput")
    valid = [f"{site_url}/index.html?n={i}" for i in range(12)]
    # Quotes end a URL in free text (the text parser's rule), so the file has the SQL
    # fragment URL-encoded; raw quotes in URL arguments: test_concurrency.py.
    valid += [f"{site_url}/page2.html?sql=%27);DROP%20TABLE%20snapshot;--"]
    idn = ["http://bücher.example/", "http://пример.испытание/"]
    bad = _bad_lines(rng)
    lines = [*valid, *idn, *[b for b, _ in bad]]
    lines += [f"{site_url}/page1.html?extra={i}" for i in range(200 - len(lines))]
    rng.shuffle(lines)
    assert len(lines) == 200
    seeds = root / "urls.txt"
    seeds.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = root / "data"
    proc = run_cli(data, "add", "--plugins", "ledger", "--config", f"PLUGINS_PATH={PLUGINS}",
                   "--config", "RELIABILITY_WORK=0", "--concurrency", "8",
                   "--config", "URL_ALLOW_PRIVATE=true",  # the local site is on 127.0.0.1
                   "--tag", SQL_TAG, "--tag", QUOTE_TAG, str(seeds))
    # The same private/file URLs as arguments, with nothing allowed: all refused.
    strict = run_cli(root / "strict", "add", "--plugins", "ledger",
                     "--config", f"PLUGINS_PATH={PLUGINS}", f"{site_url}/index.html",
                     "http://10.0.0.1/", "file:///etc/passwd")
    snaps = {u for (u,) in query(data, "SELECT url FROM snapshot")}
    return {"proc": proc, "strict": strict, "valid": valid, "idn": idn, "bad": bad,
            "lines": lines, "snaps": snaps, "data": data, "site": site_url}


def _refusals(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("refused ")]


def test_valid_urls_are_archived(added: dict[str, Any]) -> None:
    proc = added["proc"]
    assert proc.returncode == 3, proc.stderr[-3000:]  # archived, some inputs refused
    missing = [u for u in added["valid"] if u not in added["snaps"]]
    assert not missing, missing
    rows = query(added["data"], "SELECT a.status, count(*) FROM archiveresult a GROUP BY 1")
    assert dict(rows).get("succeeded", 0) == len(added["snaps"]), rows


def test_every_invalid_line_is_listed_with_its_reason(added: dict[str, Any]) -> None:
    refusals = "\n".join(_refusals(added["proc"].stderr))
    for line, why in added["bad"]:
        shown = repr(line)[:60]
        hits = [r for r in refusals.splitlines() if shown[:-1] in r]
        assert hits, f"not listed: {line[:80]!r}"
        assert any(why.lower() in r.lower() for r in hits), (line[:80], why, hits[:2])
        assert line not in added["snaps"]


def test_idn_hosts_are_stored_as_punycode(added: dict[str, Any]) -> None:
    assert "http://xn--bcher-kva.example/" in added["snaps"]
    assert not any("ü" in u for u in added["snaps"])


def test_quotes_and_sql_are_stored_verbatim(added: dict[str, Any]) -> None:
    data = added["data"]
    assert query(data, "SELECT count(*) FROM snapshot")[0][0] == len(added["snaps"]) > 0
    assert added["valid"][-1] in added["snaps"]
    tags = {t for (t,) in query(data, "SELECT DISTINCT tag FROM snapshot_tag")}
    assert {SQL_TAG, QUOTE_TAG} <= tags, tags
    per = query(data, "SELECT count(DISTINCT snapshot_id) FROM snapshot_tag WHERE tag = ?",
                [SQL_TAG])
    assert per[0][0] == len(added["snaps"])


def test_private_and_file_targets_need_config(added: dict[str, Any]) -> None:
    strict = added["strict"]
    assert strict.returncode in (1, 2), strict.stderr[-2000:]
    refusals = "\n".join(_refusals(strict.stderr))
    assert re.search(r"127\.0\.0\.1.*URL_ALLOW_PRIVATE", refusals), strict.stderr[-2000:]
    assert re.search(r"10\.0\.0\.1.*URL_ALLOW_PRIVATE", refusals), strict.stderr[-2000:]
    assert re.search(r"file:///etc/passwd.*URL_ALLOW_FILE", refusals), strict.stderr[-2000:]
    assert not query(Path(strict.args[2]), "SELECT url FROM snapshot")  # --data-dir DATA


def test_one_malformed_line_does_not_sink_the_import(tmp_path: Path) -> None:
    hook = REPO / "plugins" / "seeds" / "on_Crawl__10_parse_seeds.py"
    src = tmp_path / "urls.txt"
    src.write_text("https://example.com/a\nhttp://[::1/\nhttps://example.com/b\n")
    proc = subprocess.run([sys.executable, str(hook), f"--source-url={src}", "--crawl-id=x"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, "SEEDS_PARSER": "txt"})
    urls = [json.loads(ln).get("url") for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"https://example.com/a", "https://example.com/b"} <= set(urls)
