"""archiveflow/settings.py: the ARCHIVEFLOW_* variables, read from a real environment."""

from __future__ import annotations

import os
import subprocess

import pytest

from archiveflow.settings import Settings, SettingsError, parse_bool, settings


def test_defaults_and_every_field_is_described(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ARCHIVEFLOW_"):
            monkeypatch.delenv(key)
    s = settings()
    assert s.prefect_granularity == "snapshot" and s.prefect_result_runs is True
    assert s.duckdb_threads is None and s.lock_wait == 600
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 20, name


def test_environment_is_read_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVEFLOW_PREFECT_GRANULARITY", " Task ")
    monkeypatch.setenv("ARCHIVEFLOW_PREFECT_RESULT_RUNS", "off")
    monkeypatch.setenv("ARCHIVEFLOW_DUCKDB_THREADS", "")
    s = settings()
    assert (s.prefect_granularity, s.prefect_result_runs, s.duckdb_threads) == ("task", False,
                                                                                None)
    monkeypatch.setenv("ARCHIVEFLOW_PREFECT_GRANULARITY", "bogus")
    with pytest.raises(SettingsError, match="ARCHIVEFLOW_PREFECT_GRANULARITY"):
        settings()


@pytest.mark.parametrize(("raw", "want"), [
    ("1", True), ("TRUE", True), (" yes ", True), ("on", True), (True, True),
    ("0", False), ("False", False), ("no", False), ("off", False),
    ("maybe", None), ("", None), (None, None),
])
def test_parse_bool(raw: object, want: bool | None) -> None:
    assert parse_bool(raw) is want


def test_bad_value_is_one_line_from_the_installed_command(tmp_path: object) -> None:
    from tests.command import ARCHIVEFLOW

    env = {**os.environ, "ARCHIVEFLOW_LOCK_WAIT": "soon"}
    proc = subprocess.run([ARCHIVEFLOW, "--data-dir", str(tmp_path), "status"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "archiveflow: ARCHIVEFLOW_LOCK_WAIT: Input should be a valid number, unable to parse "
        "string as a number (got 'soon')"], proc.stderr


def test_readme_lists_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`ARCHIVEFLOW_{name.upper()}`" in readme, name
