import numpy as np
import pytest
import scipy.linalg
import torch

from enat_lightning.evaluation.frechet import (FeatureStats, fid_from_features, frechet_distance, inception_score,
                                               load_stats, save_stats, sha256_file, stats_from_features)


def scipy_fid(mu1, s1, mu2, s2):
    """Independent float64 reference: the ADM / pytorch-fid formula with scipy.linalg.sqrtm."""
    covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    d = mu1 - mu2
    return float(d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_stats(rng, n, f):
    x = rng.standard_normal((n, f)) @ rng.standard_normal((f, f)) + rng.standard_normal(f)
    return x.mean(0), np.cov(x, rowvar=False)


def test_frechet_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    mu1, s1 = random_stats(rng, 400, 16)
    mu2, s2 = random_stats(rng, 300, 16)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(scipy_fid(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_closed_form_diagonal_gaussians():
    # For diagonal covariances: ||mu1-mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expect, rel=1e-12)


def test_frechet_rank_deficient_covariance_is_finite():
    # Fewer samples than dimensions: singular covariances (where sqrtm needs the eps retry).
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 12)), rng.standard_normal((6, 12)) + 0.5
    st1, st2 = stats_from_features(x), stats_from_features(y)
    ours = frechet_distance(st1.mu, st1.sigma, st2.mu, st2.sigma)
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(scipy_fid(st1.mu, st1.sigma, st2.mu, st2.sigma), rel=1e-5)


@pytest.mark.parametrize("n1,n2", [(20, 30), (30, 7), (100, 80)])  # fewer and more samples than features
def test_fid_from_features_equals_the_covariance_route(n1, n2):
    rng = np.random.default_rng(n1)
    f = 40
    x = rng.standard_normal((n1, f)) @ rng.standard_normal((f, f))
    y = rng.standard_normal((n2, f)) @ rng.standard_normal((f, f)) + 0.3
    st1, st2 = stats_from_features(x), stats_from_features(y)
    expect = scipy_fid(st1.mu, st1.sigma, st2.mu, st2.sigma)
    assert fid_from_features(x, y) == pytest.approx(expect, rel=1e-6)
    assert fid_from_features(torch.from_numpy(x).float(), y) == pytest.approx(expect, rel=1e-4)  # float32 input
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(N1, F\) and \(N2, F\)"):
        fid_from_features(x, y[:, :5])


def test_frechet_shape_errors():
    with pytest.raises(ValueError, match="sigma must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_stats_from_features_matches_numpy_and_torch_input():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    st = stats_from_features(x, feature="f")
    np.testing.assert_allclose(st.mu, x.double().numpy().mean(0))
    np.testing.assert_allclose(st.sigma, np.cov(x.double().numpy(), rowvar=False))
    assert st.num_samples == 50 and st.mu.dtype == np.float64


def test_stats_npz_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    st = stats_from_features(rng.standard_normal((20, 5)), feature="demo-classifier:abc")
    path = save_stats(tmp_path / "sub" / "ref.npz", st)
    back = load_stats(path)
    np.testing.assert_array_equal(back.mu, st.mu)
    np.testing.assert_array_equal(back.sigma, st.sigma)
    assert back.num_samples == 20 and back.feature == "demo-classifier:abc"
    assert [p.name for p in path.parent.iterdir()] == ["ref.npz"]  # no tmp file left behind
    assert len(sha256_file(path)) == 64


def test_load_adm_style_file(tmp_path):
    # ADM reference batches hold images in arr_0 beside float32 mu/sigma (and mu_s/sigma_s).
    mu, sigma = np.arange(4, dtype=np.float32), np.eye(4, dtype=np.float32)
    np.savez(tmp_path / "VIRTUAL_imagenet256_labeled.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=mu,
             sigma=sigma, mu_s=mu[:2], sigma_s=sigma[:2, :2])
    st = load_stats(tmp_path / "VIRTUAL_imagenet256_labeled.npz")
    assert st.mu.dtype == np.float64 and st.feature is None and st.num_samples is None
    np.testing.assert_array_equal(st.mu, mu)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_stats(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", m=np.zeros(3))
    with pytest.raises(ValueError, match=r"bad.npz lacks key\(s\) \['mu', 'sigma'\]"):
        load_stats(tmp_path / "bad.npz")


def test_feature_stats_validates_shapes():
    with pytest.raises(ValueError, match="mu"):
        FeatureStats(np.zeros(3), np.zeros((2, 2)))


def test_inception_score_uniform_and_confident():
    # Confident predictions spread evenly over C classes -> IS = C; identical predictions -> IS = 1.
    C = 10
    confident = torch.full((100, C), -1e4)
    confident[torch.arange(100), torch.arange(100) % C] = 0.0
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(C, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    mean, _ = inception_score(torch.zeros(100, C), splits=5)
    assert mean == pytest.approx(1.0)


def test_inception_score_matches_direct_formula():
    logits = torch.randn(60, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mean, std = inception_score(logits, splits=3)
    ref = []
    for part in np.array_split(torch.softmax(logits, 1).numpy(), 3):
        py = part.mean(0, keepdims=True)
        ref.append(np.exp((part * (np.log(part) - np.log(py))).sum(1).mean()))
    assert mean == pytest.approx(np.mean(ref), rel=1e-10) and std == pytest.approx(np.std(ref), rel=1e-8)
