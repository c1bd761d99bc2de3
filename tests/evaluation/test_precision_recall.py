"""k-NN precision / recall (ADM evaluator semantics) against torch-fidelity's ``prc`` on the same features.

Tolerance: exact equality in float64 (both decide ``distance <= k-th neighbour distance`` on the same
points; torch-fidelity compares Euclidean distances, we compare squared ones -- the same order). In float32
(our default) a point may land on the other side of a ball's surface only when it is within round-off of it:
allowed here as one point per side (1/N).
"""
import pytest
import torch

from enat_lightning.evaluation.precision_recall import manifold_radii, precision_recall, squared_distances


def features(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (0.4, 0.7), (0.0, 1.6)])
def test_matches_torch_fidelity_prc(shift, scale):
    prc = pytest.importorskip("torch_fidelity.metric_prc")
    real, fake = features(300, 16, 0), features(250, 16, 1, shift, scale)
    theirs = prc.prc_features_to_metric(fake, real, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False,
                                        verbose=False)
    ours64 = precision_recall(real, fake, dtype=torch.float64)
    assert (ours64.precision, ours64.recall) == (pytest.approx(theirs["precision"], abs=1e-7),
                                                 pytest.approx(theirs["recall"], abs=1e-7))
    ours32 = precision_recall(real, fake)  # the default: float32 distances
    assert abs(ours32.precision - theirs["precision"]) <= 1 / 250 and abs(ours32.recall - theirs["recall"]) <= 1 / 300


def test_blocks_do_not_change_the_result():
    """The 50k x 10k case runs in (block x block) pieces: any block size gives the same numbers."""
    real, fake = features(130, 8, 2), features(97, 8, 3, 0.3)
    whole = precision_recall(real, fake, dtype=torch.float64)
    assert precision_recall(real, fake, block=7, dtype=torch.float64) == whole
    assert torch.equal(manifold_radii(real, block=11, dtype=torch.float64), manifold_radii(real, dtype=torch.float64))


def test_adm_semantics_radius_counts_the_point_itself():
    """On a line 0, 1, 2, 3, 10: neighbour 0 is the point itself, so k=3 gives the 3rd other point (squared)."""
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    assert manifold_radii(x, k=3, dtype=torch.float64).tolist() == [9.0, 4.0, 4.0, 9.0, 81.0]
    assert squared_distances(x[:2], x[3:]).tolist() == [[9.0, 100.0], [4.0, 81.0]]


def test_identical_sets_and_far_apart_sets():
    a = features(60, 4, 4)
    assert precision_recall(a, a) == (1.0, 1.0)
    far = precision_recall(a, a + 100)
    assert far == (0.0, 0.0)


def test_mode_collapse_keeps_precision_and_loses_recall():
    """Samples copying a few references: inside the reference manifold (precision 1) yet covering little of it."""
    real = features(200, 6, 5)
    collapsed = real[:10].repeat(5, 1) + 1e-3 * features(50, 6, 6)
    pr = precision_recall(real, collapsed)
    assert pr.precision == 1.0 and pr.recall < 0.2


def test_errors():
    with pytest.raises(ValueError, match="more than 3 points"):
        precision_recall(features(3, 2, 0), features(10, 2, 1))
    with pytest.raises(ValueError, match="dimensions differ"):
        precision_recall(features(10, 2, 0), features(10, 3, 1))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        manifold_radii(torch.zeros(5))
