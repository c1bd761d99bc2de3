"""Fixtures for the data tests."""
from __future__ import annotations

import pytest
from shard_helpers import make_samples, write_set


@pytest.fixture
def shard_set(tmp_path):
    """50 samples (with flips) in 7 shards of <= 8."""
    samples = make_samples(50)
    return write_set(tmp_path / "set", samples, shard_size=8), samples
