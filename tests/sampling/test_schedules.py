"""Mask schedules: the official cosine counts, the MaskGIT family, manual lists, validation."""
import math

import pytest
import torch

from enat_lightning.sampling.schedules import SCHEDULES, mask_ratio, masked_counts


def test_cosine_counts_match_official_reference():
    # fixtures README §1: inputs of the 8 steps hold these masked counts for L=256
    assert masked_counts(256, 8) == [256, 251, 236, 212, 181, 142, 97, 49, 0]
    assert masked_counts(16, 4)[:4] == [16, 14, 11, 6]  # the generate fixture


@pytest.mark.parametrize("kind", SCHEDULES)
def test_every_schedule_starts_full_ends_empty_and_never_increases(kind):
    counts = masked_counts(256, 12, kind)
    assert counts[0] == 256 and counts[-1] == 0
    assert all(b <= a for a, b in zip(counts, counts[1:]))
    assert mask_ratio(0.0, kind) == 1.0 and mask_ratio(1.0, kind) == pytest.approx(0.0, abs=1e-12)


def test_family_members_differ_as_expected():
    # at t=1/2: cosine .707, linear .5, square .75, cubic .875, sqrt .293
    want = {"cosine": math.cos(math.pi / 4), "linear": 0.5, "square": 0.75, "cubic": 0.875, "sqrt": 1 - math.sqrt(0.5)}
    for kind, v in want.items():
        assert mask_ratio(0.5, kind) == pytest.approx(v)
    assert masked_counts(256, 8, "linear") == [256, 224, 192, 160, 128, 96, 64, 32, 0]


def test_tensor_ratio_matches_float_ratio():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for kind in SCHEDULES:
        got = mask_ratio(t, kind)
        assert torch.allclose(got, torch.tensor([mask_ratio(float(x), kind) for x in t], dtype=torch.float64))


def test_manual_schedule():
    assert masked_counts(100, 3, [0.5, 0.2, 0.0]) == [100, 50, 20, 0]
    with pytest.raises(ValueError, match="end at ratio 0"):
        masked_counts(100, 2, [0.5, 0.1])
    with pytest.raises(ValueError, match="non-increasing"):
        masked_counts(100, 3, [0.2, 0.5, 0.0])
    with pytest.raises(ValueError, match="3 ratios but steps=2"):
        masked_counts(100, 2, [0.5, 0.2, 0.0])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown mask schedule 'cosin'"):
        masked_counts(16, 4, "cosin")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        masked_counts(16, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_ratio(1.5)
