"""Task-level retries of ArchiveResults (issue 13, point 10): a hook that fails for a passing
reason runs again per its plugin's RETRIES, every attempt stays on disk, the row counts them,
and the ArchiveResult's Prefect task run shows them. Through the installed command, against
a local server that answers 503 first."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import pytest

from archiveflow.tasks.config import hook_retries
from archiveflow.tasks.discover import Hook
from archiveflow.tasks.hooks import HookOutcome
from archiveflow.tasks.results import is_transient
from tests.flows.conftest import run_cli

PLUGINS = Path(__file__).parent / "plugins"
STEM = "on_Snapshot__20_fetchpage"
PAGE = b"<!DOCTYPE html><title>Back</title><p>served</p>"


class FlakyServer:
    """127.0.0.1, port 0. `/flaky/...` answers 503 to the first request of each path, then
    200; `/down/...` answers 503 until `fixed`; anything else 404. Counts requests by path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.fixed = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                n = outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path.startswith("/flaky/") and n > 1 or (
                        self.path.startswith("/down/") and outer.fixed):
                    code, body = 200, PAGE
                elif self.path.startswith(("/flaky/", "/down/")):
                    code, body = 503, b"busy"
                else:
                    code, body = 404, b"not here"
                self.send_response(code)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._srv.server_address[1]}"

    def __enter__(self) -> FlakyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._srv.shutdown()
        self._srv.server_close()


@pytest.fixture
def flaky() -> Iterator[FlakyServer]:
    with FlakyServer() as srv:
        yield srv


def add(data: Path, *urls: str, config: tuple[str, ...] = ()) -> Any:
    """`archiveflow add` of the fixture plugin alone, with a short retry delay."""
    extra = [a for kv in config for a in ("--config", kv)]
    return run_cli(data, "add", "--allow-private", "--plugins", "fetchpage",
                   "--config", f"PLUGINS_PATH={PLUGINS}", "--config",
                   "FETCHPAGE_RETRY_DELAY=0.2", *extra, *urls)


def rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(data / "index.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def results_by_url(data: Path) -> dict[str, tuple[Any, ...]]:
    """url path → (status, attempts, output_dir, id) of its fetchpage result."""
    got = rows(data, "SELECT s.url, a.status, a.attempts, a.output_dir, a.id "
                     "FROM archiveresult a JOIN snapshot s ON s.id = a.snapshot_id")
    return {"/" + url.split("/", 3)[3]: tuple(rest) for url, *rest in got}


def test_a_503_is_retried_and_a_404_is_not(tmp_path: Path, flaky: FlakyServer,
                                           prefect_api: str) -> None:
    proc = add(tmp_path, f"{flaky.url}/flaky/a.html", f"{flaky.url}/gone.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = results_by_url(tmp_path)
    assert got["/flaky/a.html"][:2] == ("succeeded", 2)
    assert got["/gone.html"][:2] == ("failed", 1)
    assert flaky.hits == {"/flaky/a.html": 2, "/gone.html": 1}

    # Both attempts are on disk; the current files are the last attempt's.
    folder = tmp_path / got["/flaky/a.html"][2]
    assert "HTTP Error 503" in (folder / f"{STEM}.attempt1.stdout.log").read_text()
    assert (folder / f"{STEM}.attempt1.exit.json").exists()
    assert '"succeeded"' in (folder / f"{STEM}.stdout.log").read_text()
    assert (folder / "page.html").read_bytes() == PAGE
    assert not list((tmp_path / got["/gone.html"][2]).glob("*.attempt*"))
    # The attempt files are not output files of the result.
    assert rows(tmp_path, f"SELECT path FROM output_file WHERE archiveresult_id = "
                          f"'{got['/flaky/a.html'][3]}'") == [("fetchpage/page.html",)]

    # The ArchiveResult's task run shows the retry as Prefect's engine would.
    run, states = task_run_with_states(got["/flaky/a.html"][3], final="Completed")
    assert run.run_count == 2
    assert run.state.message.startswith("attempt 2 of 2")
    names = [s.name for s in states]
    assert names == ["Running", "AwaitingRetry", "Retrying", "Completed"]
    assert "attempt 1 of 2 failed:" in states[1].message
    assert "HTTP Error 503" in states[1].message
    plain, plain_states = task_run_with_states(got["/gone.html"][3], final="Failed")
    assert plain.run_count == 1 and [s.name for s in plain_states] == ["Failed"]

    # Rebuilt from the folder alone, an earlier attempt is no run of its own.
    proc = run_cli(tmp_path, "reindex")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {k: v[:2] for k, v in results_by_url(tmp_path).items()} == {
        "/flaky/a.html": ("succeeded", 2), "/gone.html": ("failed", 1)}


def test_retries_follow_the_plugin_keys(tmp_path: Path, flaky: FlakyServer,
                                        prefect_api: str) -> None:
    # FETCHPAGE_RETRIES=0 overrides the global RETRIES: the 503 stays a failure.
    proc = add(tmp_path, f"{flaky.url}/flaky/b.html", config=("FETCHPAGE_RETRIES=0",))
    assert proc.returncode == 1, proc.stderr[-3000:]  # every result failed
    assert results_by_url(tmp_path)["/flaky/b.html"][:2] == ("failed", 1)
    assert flaky.hits == {"/flaky/b.html": 1}


def test_a_hook_saying_retryable_false_is_not_retried(tmp_path: Path, flaky: FlakyServer,
                                                      prefect_api: str) -> None:
    proc = add(tmp_path, f"{flaky.url}/flaky/c.html", config=(
        "FETCHPAGE_SAY_RETRYABLE=true", "RETRIES=3"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert results_by_url(tmp_path)["/flaky/c.html"][:2] == ("failed", 1)


def task_run_with_states(ar_id: str, final: str) -> tuple[Any, list[Any]]:
    """The ArchiveResult's task run and its states, once the server recorded its final one
    (task-run events are recorded in batches, after the command exited)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for _ in range(300):
            try:
                run = client.read_task_run(UUID(ar_id))
            except Exception:  # noqa: BLE001 - not recorded yet
                run = None
            if run is not None and run.state is not None and run.state.name == final:
                states = sorted(client.read_task_run_states(UUID(ar_id)),
                                key=lambda s: s.timestamp)
                return run, states
            time.sleep(0.1)
    raise AssertionError(f"task run {ar_id} never reached {final}: {run}")


# --- the rule and the keys, directly --------------------------------------------------------
def failed(error: str, output_json: Any = None) -> HookOutcome:
    now = datetime.now(UTC)
    return HookOutcome(status="failed", error=error, output_json=output_json,
                       started_at=now, ended_at=now)


@pytest.mark.parametrize(("error", "transient"), [
    ("http://x/: HTTP Error 503: Service Unavailable", True),
    ("ERROR 429: Too Many Requests.", True),
    ("The requested URL returned error: 502", True),
    ("504 Gateway Timeout", True),
    ("[Errno 104] Connection reset by peer", True),
    ("<urlopen error [Errno -3] Temporary failure in name resolution>", True),
    ("http://x/: timed out", True),
    ("net::ERR_CONNECTION_RESET", True),
    ("http://x/: HTTP Error 404: Not Found", False),
    ("ERROR 501: Not Implemented.", False),
    ("http://x/: connection refused", False),
    ("http://x/: DNS lookup failed (Name or service not known)", False),
    ("archiveflow egress: x:80: connection refused\nERROR 502: Not reached by archiveflow "
     "egress proxy", False),
    ("boom: upstream 503 for snapshot 1 after 12 tries", False),
    ("not an http(s) URL: ftp://x", False),
])
def test_the_retry_rule(error: str, transient: bool) -> None:
    assert is_transient(failed(error)) is transient


def test_a_hook_decides_with_retryable() -> None:
    assert is_transient(failed("HTTP Error 404", {"retryable": True})) is True
    assert is_transient(failed("HTTP Error 503", {"retryable": False})) is False
    ok = failed("HTTP Error 503")
    ok.status = "succeeded"
    assert is_transient(ok) is False


def test_retry_keys_layer_like_timeout() -> None:
    hook = Hook(path=Path("x"), plugin="fetchpage", event="Snapshot", order=20, name=STEM,
                is_background=False, is_daemon=False)
    assert hook_retries(hook, {"RETRIES": "1", "RETRY_DELAY": "2"}).retries == 1
    policy = hook_retries(hook, {"RETRIES": "1", "FETCHPAGE_RETRIES": "3",
                                 "RETRY_DELAY": "2", "FETCHPAGE_RETRY_DELAY": "0.5"})
    assert (policy.retries, policy.delay) == (3, 0.5)
    assert [policy.delay_before(n) for n in (2, 3, 4)] == [0.5, 1.0, 2.0]
    assert hook_retries(hook, {}).retries == 1 and hook_retries(hook, {}).delay == 2.0
