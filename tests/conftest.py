"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

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
