"""ADM reference batches (mu/sigma, mu_s/sigma_s, arr_0) read as published and written in the same layout;
FID / sFID distances against pytorch-fid's (an implementation nobody here wrote).

Tolerance of the pytorch-fid cross-check: 1e-6 relative (both float64; pytorch-fid uses scipy's sqrtm, we a
symmetric eigendecomposition; measured ~1e-10 relative).
"""
import numpy as np
import pytest
import torch

from enat_lightning.evaluation.frechet import FeatureStats, frechet_distance, stats_from_features
from enat_lightning.evaluation.metrics import parse_metrics, score_extra
from enat_lightning.evaluation.reference_batch import (ReferenceBatch, load_reference_batch, load_reference_spec,
                                                       save_reference_batch)
from enat_lightning.evaluation.spatial import SPATIAL_NAME, FeatureSet


def test_reads_a_published_adm_batch_as_is(tmp_path):
    """ADM's files hold float64 mu/sigma, mu_s/sigma_s and uint8 arr_0, nothing else."""
    rng = np.random.default_rng(0)
    pool, spat = rng.normal(size=(40, 6)), rng.normal(size=(40, 5))
    imgs = rng.integers(0, 256, size=(7, 9, 11, 3), dtype=np.uint8)
    path = tmp_path / "VIRTUAL_tiny_labeled.npz"
    np.savez(path, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False), mu_s=spat.mean(0),
             sigma_s=np.cov(spat, rowvar=False), arr_0=imgs)
    b = load_reference_batch(path)
    assert np.allclose(b.pool.mu, pool.mean(0)) and np.allclose(b.spatial.sigma, np.cov(spat, rowvar=False))
    assert b.pool.feature is None and b.num_images == 7
    assert torch.equal(b.images, torch.from_numpy(imgs).permute(0, 3, 1, 2))  # NHWC file -> NCHW
    assert load_reference_batch(path, images=False).images is None


def test_written_batch_has_the_adm_keys_and_round_trips(tmp_path):
    feats = torch.randn(30, 4, dtype=torch.float64)
    spat = torch.randn(30, 3, dtype=torch.float64)
    imgs = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    batch = ReferenceBatch(stats_from_features(feats, "net-a"), stats_from_features(spat, SPATIAL_NAME), imgs)
    path = save_reference_batch(tmp_path / "ref.npz", batch)
    with np.load(path) as z:
        assert set(z.files) == {"mu", "sigma", "mu_s", "sigma_s", "arr_0", "num_samples", "feature", "feature_s"}
        assert z["arr_0"].shape == (5, 8, 8, 3) and z["arr_0"].dtype == np.uint8
    back = load_reference_batch(path)
    assert back.pool.feature == "net-a" and back.spatial.feature == SPATIAL_NAME and back.pool.num_samples == 30
    assert torch.equal(back.images, imgs) and np.array_equal(back.spatial.mu, batch.spatial.mu)
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['sigma'\]"):
        np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
        load_reference_batch(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_reference_batch(tmp_path / "nothere.npz")


class _Net:  # a feature network stand-in: features = mean colour of the image, 3-d
    name, num_features, predicts_labels = "mean-colour", 3, False

    def __call__(self, images):
        from enat_lightning.evaluation.features import Features

        return Features(images.float().mean((2, 3)), None)


def test_missing_parts_give_reasons_not_silence():
    net = _Net()
    fs = FeatureSet(torch.randn(20, 3, dtype=torch.float64), None, None)
    stats_only = ReferenceBatch(stats_from_features(torch.randn(20, 3), "mean-colour"))
    out = score_extra(fs, net, stats_only, parse_metrics("sfid,precision,recall"))
    assert "spatial layer" in out["sfid_unavailable"] and "arr_0" in out["precision_recall_unavailable"]
    imgs = torch.randint(0, 256, (12, 3, 4, 4), dtype=torch.uint8)
    with_images = ReferenceBatch(stats_only.pool, None, imgs)
    out = score_extra(FeatureSet(net(imgs).features.double(), None, None), net, with_images,
                      parse_metrics("precision,recall"))
    assert out["precision"] == out["recall"] == 1.0 and out["precision_recall_reference_images"] == 12
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("fid,kid")


def test_demo_spec_is_a_batch_with_the_digits_as_reference_images():
    net = _Net()
    b = load_reference_spec("demo:digits:val", net)
    assert b.num_images == b.pool.num_samples > 100 and b.images.dtype == torch.uint8 and b.spatial is None
    assert load_reference_spec("demo:digits:val", net, images=False).images is None


@pytest.mark.parametrize("dim", [64, pytest.param(2023, marks=pytest.mark.slow)])  # 2023: the sFID dimension (scipy sqrtm: minutes)
def test_frechet_distance_matches_pytorch_fid(dim):
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    g = torch.Generator().manual_seed(dim)
    a = torch.randn(dim + 200, dim, generator=g, dtype=torch.float64)
    b = torch.randn(dim + 200, dim, generator=g, dtype=torch.float64) * 1.1 + 0.05
    sa, sb = stats_from_features(a), stats_from_features(b)
    theirs = fid_score.calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(theirs, rel=1e-6)
    assert isinstance(FeatureStats(sa.mu, sa.sigma), FeatureStats)
