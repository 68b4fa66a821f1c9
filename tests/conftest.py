"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # `sitesrv` lives beside this file, whatever the rootdir
    sys.path.insert(0, str(TESTS_DIR))

from sitesrv import SiteServer  # noqa: E402

SITE_DIR = TESTS_DIR / "fixtures" / "site"
SEEDS_DIR = TESTS_DIR / "fixtures" / "seeds"


# --- the local test site -------------------------------------------------------------------
@pytest.fixture(scope="session")
def site_server() -> Iterator[SiteServer]:
    """tests/fixtures/site on 127.0.0.1 (port 0), with tests/fixtures/seeds under /seeds/."""
    srv = SiteServer(SITE_DIR, mounts={"/seeds/": SEEDS_DIR})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def site_url(site_server: SiteServer) -> str:
    """Base URL of the local test site, without a trailing slash."""
    return site_server.base_url


# --- one Prefect API for the whole test session ----------------------------------------
@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect API (prefect_test_harness) shared by every flow test of the session.

    Its URL is exported as PREFECT_API_URL so CLI subprocesses report to it too.
    """
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        url = str(get_current_settings().api.url)
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
