"""deployments/crawls.parameter_changes: which parameters of a run differ from its schedule's."""

from __future__ import annotations

from archiveflow.deployments.crawls import parameter_changes, refusal

SCHEDULE = {"seeds": "https://example.com/feed.xml", "depth": 1, "tags": ["news"],
            "config": {"URL_ALLOW_PRIVATE": "true"}, "data_dir": "/srv/archive",
            "schedule": "feed", "max_urls": None}


def test_the_schedules_own_parameters_pass() -> None:
    assert parameter_changes(SCHEDULE, dict(SCHEDULE)) == []
    # as the API hands them back (JSON): tuples are lists, etc.
    assert parameter_changes({**SCHEDULE, "tags": ("news",)}, SCHEDULE) == []


def test_config_keys_and_other_parameters_are_named() -> None:
    forged = {**SCHEDULE, "data_dir": "/home/other/archive",
              "config": {"URL_ALLOW_PRIVATE": "true", "PLUGINS_PATH": "/tmp/evil",
                         "WGET_BINARY": "/tmp/evil/wget"}}
    assert parameter_changes(SCHEDULE, forged) == [
        "config.PLUGINS_PATH", "config.WGET_BINARY", "data_dir"]
    assert parameter_changes(SCHEDULE, {**SCHEDULE, "config": {}}) == [
        "config.URL_ALLOW_PRIVATE"]
    assert parameter_changes(SCHEDULE, {**SCHEDULE, "extra": 1}) == ["extra"]
    assert parameter_changes(SCHEDULE, {k: v for k, v in SCHEDULE.items()
                                        if k != "depth"}) == ["depth"]
    assert parameter_changes(SCHEDULE, {**SCHEDULE, "config": "PLUGINS_PATH=/x"}) == ["config"]


def test_refusal_names_the_deployment_the_parameters_and_the_way_to_change_them() -> None:
    text = refusal("archive/feed", ["config.PLUGINS_PATH", "data_dir"])
    assert text.startswith("refused by archiveflow serve: parameters differ from deployment "
                           "archive/feed's (config.PLUGINS_PATH, data_dir)")
    assert "schedule add --replace" in text and "\n" not in text
    many = refusal("archive/feed", [f"config.K{i}" for i in range(12)])
    assert "and 4 more" in many
