"""Schedules without Prefect: intervals, cron strings, names, schedules.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiveflow.deployments import crawls as dep


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200),
                                               ("1d", 86400), ("2w", 1209600),
                                               ("1.5h", 5400)])
def test_parse_every(text: str, seconds: int) -> None:
    assert dep.parse_every(text) == seconds


@pytest.mark.parametrize("text", ["1", "d", "10x", "30s", "-1d"])
def test_parse_every_refuses(text: str) -> None:
    with pytest.raises(dep.ScheduleError):
        dep.parse_every(text)


def test_check_cron() -> None:
    assert dep.check_cron("0 3 * * *") == "0 3 * * *"
    with pytest.raises(dep.ScheduleError, match="not a valid cron"):
        dep.check_cron("every day")


def test_default_name() -> None:
    assert dep.default_name("https://blog.example.com/2024/feed.xml") == \
        "blog.example.com-feed.xml"
    assert dep.default_name('{"url": "https://a.com/x/y"}\n{"url": "https://b.com"}') == \
        "a.com-y"
    assert dep.default_name("https://example.com/") == "example.com"


def test_schedule_needs_exactly_one_of_interval_and_cron() -> None:
    with pytest.raises(ValueError, match="not both"):
        dep.Schedule(name="x", parameters={"seeds": "https://a.com"})
    with pytest.raises(ValueError, match="not both"):
        dep.Schedule(name="x", every_seconds=60, cron="* * * * *", parameters={})
    with pytest.raises(ValueError, match="schedule name"):
        dep.Schedule(name="a/b", every_seconds=60, parameters={})
    assert dep.Schedule(name="x", every_seconds=7 * 86400, parameters={}).describe() == \
        "every 1w"
    assert dep.Schedule(name="x", cron="0 3 * * *", parameters={}).describe() == \
        "cron 0 3 * * *"


def test_schedules_json_round_trip(tmp_path: Path) -> None:
    assert dep.load_schedules(tmp_path) == {}
    s = dep.Schedule(name="feed", every_seconds=3600, parameters={"seeds": "https://a.com",
                                                                  "only_new": True})
    dep.save_schedules(tmp_path, {"feed": s})
    assert dep.load_schedules(tmp_path) == {"feed": s}
    assert not list(tmp_path.glob("*.tmp"))


def test_flow_name_matches_the_flow() -> None:
    from archiveflow.flows.scheduled import FLOW_NAME, archive

    assert dep.FLOW_NAME == FLOW_NAME == archive.name
