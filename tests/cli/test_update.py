"""`archiveflow update` (issue 13, point 10): the failed ArchiveResults of existing snapshots
run again through the normal crawl path, the succeeded ones are left alone. Through the
installed command, against a local server that answers 503 until it is fixed."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_retries import STEM, FlakyServer, add, flaky, results_by_url, rows
from tests.flows.conftest import run_cli

__all__ = ["flaky"]  # the fixture, used by name below


def test_update_reruns_failed_results_once_the_server_is_fixed(
        tmp_path: Path, flaky: FlakyServer, prefect_api: str) -> None:
    proc = add(tmp_path, f"{flaky.url}/down/a.html", f"{flaky.url}/flaky/ok.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = results_by_url(tmp_path)
    assert before["/down/a.html"][:2] == ("failed", 2)  # retried once, still down
    assert before["/flaky/ok.html"][:2] == ("succeeded", 2)
    ok_end = rows(tmp_path, f"SELECT end_ts FROM archiveresult WHERE id = "
                            f"'{before['/flaky/ok.html'][3]}'")

    # Nothing matches these filters: nothing is touched.
    for args in (("--url-contains", "nowhere"), ("--plugins", "headers"),
                 ("--status", "skipped"), ("--crawl", "no-such-crawl")):
        proc = run_cli(tmp_path, "update", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "nothing to update" in proc.stderr
    assert results_by_url(tmp_path) == before

    flaky.fixed = True
    hits_ok = flaky.hits["/flaky/ok.html"]
    crawl_id = rows(tmp_path, "SELECT id FROM crawl")[0][0]
    proc = run_cli(tmp_path, "update", "--crawl", crawl_id, "--plugins", "fetchpage",
                   "--url-contains", "/down/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "updating 1 failed result(s) of 1 snapshot(s) in 1 crawl(s)" in proc.stderr
    assert "updated: 1 succeeded" in proc.stderr
    assert "fetchpage" in proc.stdout  # the summary table

    after = results_by_url(tmp_path)
    assert after["/down/a.html"][:2] == ("succeeded", 3)  # the third run of that hook
    assert after["/flaky/ok.html"] == before["/flaky/ok.html"]  # left alone
    assert flaky.hits["/flaky/ok.html"] == hits_ok
    assert rows(tmp_path, f"SELECT end_ts FROM archiveresult WHERE id = "
                          f"'{before['/flaky/ok.html'][3]}'") == ok_end
    # Every run of the hook is on disk; the crawl and its snapshots are sealed again, and
    # the crawl's seed parser found no URL it did not have.
    folder = tmp_path / after["/down/a.html"][2]
    assert sorted(p.name for p in folder.glob(f"{STEM}.attempt*.exit.json")) == [
        f"{STEM}.attempt1.exit.json", f"{STEM}.attempt2.exit.json"]
    assert rows(tmp_path, "SELECT DISTINCT status FROM crawl") == [("sealed",)]
    assert rows(tmp_path, "SELECT count(*), min(status), max(status) FROM snapshot") == [
        (2, "sealed", "sealed")]

    proc = run_cli(tmp_path, "update")
    assert proc.returncode == 0 and "nothing to update" in proc.stderr


def test_update_exits_1_when_every_rerun_fails_again(tmp_path: Path, flaky: FlakyServer,
                                                     prefect_api: str) -> None:
    proc = add(tmp_path, f"{flaky.url}/gone.html", config=("RETRIES=0",))
    assert proc.returncode == 1, proc.stderr[-3000:]
    proc = run_cli(tmp_path, "update")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "updated: 1 failed" in proc.stderr
    assert results_by_url(tmp_path)["/gone.html"][:2] == ("failed", 2)
    assert flaky.hits == {"/gone.html": 2}
