"""Shared fixtures. Official-code fixture files live in tests/fixtures/ (in the repository); a missing one
fails the test that needs it (never skips)."""
from __future__ import annotations

import pytest

from enat_testing import FIXTURES, REPO, load_fixture, tolerance  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def official_enat() -> dict:
    return load_fixture("official_enat_tiny.pt")


@pytest.fixture(scope="session")
def official_vqgan() -> dict:
    return load_fixture("official_vqgan_tiny.pt")
