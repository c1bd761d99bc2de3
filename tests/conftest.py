"""Shared fixtures. Official-code fixture files live in tests/fixtures/ (in the repository); a missing one
fails the test that needs it (never skips)."""
from __future__ import annotations

import pytest

import enat_lightning.demo.classifier  # noqa: F401  registers the 'demo' feature network (as the commands do)
from enat_testing import FIXTURES, REPO, load_fixture, tolerance  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def official_enat() -> dict:
    return load_fixture("official_enat_tiny.pt")


@pytest.fixture(scope="session")
def official_vqgan() -> dict:
    return load_fixture("official_vqgan_tiny.pt")


@pytest.fixture
def one_thread():
    """Tiny models: threads only add contention on a shared 2-core machine (use with pytestmark)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
