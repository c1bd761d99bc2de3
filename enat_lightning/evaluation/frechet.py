"""Fréchet distance, Inception score and feature-statistics files (float64, numpy/torch only).

Shape letters: N samples, F feature dimension, C classes of the feature network.

The statistics files follow the ADM (guided-diffusion) / U-ViT reference layout: an ``.npz`` with
``mu`` (F,) and ``sigma`` (F, F). Files we write add ``num_samples`` and a ``feature`` string naming
the feature network, so a demo-FID file is never compared with Inception features by mistake.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from enat_lightning.fileio import atomic_writer, sha256_file  # noqa: F401 (sha256_file: re-exported)


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: mu (F,), sigma (F, F), both float64."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int | None = None
    feature: str | None = None  # e.g. "inception-v3-2048", "demo-classifier:<sha>"; None for foreign files

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        sigma = np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"feature stats need mu (F,) and sigma (F, F); got mu {mu.shape}, sigma {sigma.shape}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)


def stats_from_features(features: np.ndarray | torch.Tensor, feature: str | None = None) -> FeatureStats:
    """Mean and unbiased covariance (ddof=1, as ADM / pytorch-fid / torchmetrics) of (N, F) features."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else \
        np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features of shape (N, F) with N >= 2, got {x.shape}")
    return FeatureStats(x.mean(axis=0), np.cov(x, rowvar=False), num_samples=int(x.shape[0]), feature=feature)


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix (eigenvalues below 0 from round-off set to 0)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64.

    tr((S1 S2)^(1/2)) is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric
    PSD, so a symmetric eigendecomposition is exact up to round-off and needs neither scipy's
    ``sqrtm`` (complex output, ill-conditioned for singular covariances) nor the ``eps * I`` retry
    that ADM / pytorch-fid apply when it fails.
    """
    m1, m2 = (torch.as_tensor(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    if m1.shape != m2.shape or m1.dim() != 1:
        raise ValueError(f"mu shapes differ or are not (F,): {tuple(m1.shape)} vs {tuple(m2.shape)}")
    F_ = m1.shape[0]
    if s1.shape != (F_, F_) or s2.shape != (F_, F_):
        raise ValueError(f"sigma must be ({F_}, {F_}); got {tuple(s1.shape)} and {tuple(s2.shape)}")
    s1 = (s1 + s1.T) / 2  # files store float32 covariances that are symmetric only to round-off
    s2 = (s2 + s2.T) / 2
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = m1 - m2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)


def fid_from_features(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """The Fréchet distance of two feature sets (N1, F) and (N2, F), exactly ``frechet_distance`` of their
    means and unbiased covariances, in float64.

    With fewer samples than features (the demo: 500 against F = 2048) the covariances have rank < F and
    a 2048-d eigendecomposition (seconds on a CPU) is not needed: with centred X1 (N1, F), X2 (N2, F),
    S_i = X_i^T X_i / (N_i - 1), the non-zero eigenvalues of S1 S2 are the squared singular values of
    M = X2 X1^T / sqrt((N1 - 1)(N2 - 1)) (N2, N1), so tr((S1 S2)^(1/2)) is M's nuclear norm
    (milliseconds), and tr(S_i) = ||X_i||_F^2 / (N_i - 1). With more samples than features the
    covariance route is the smaller one and is used.
    """
    x1, x2 = (torch.as_tensor(t).detach().cpu().double() for t in (a, b))
    if x1.dim() != 2 or x2.dim() != 2 or x1.shape[1] != x2.shape[1] or min(len(x1), len(x2)) < 2:
        raise ValueError(f"need features (N1, F) and (N2, F) with N >= 2, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    n1, n2, F_ = len(x1), len(x2), x1.shape[1]
    if max(n1, n2) > F_:
        return fid_from_stats(stats_from_features(x1), stats_from_features(x2))
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mu1, x2 - mu2
    cross = (c2 @ c1.T) / np.sqrt((n1 - 1) * (n2 - 1))  # (N2, N1)
    tr_covmean = torch.linalg.svdvals(cross).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (c1 * c1).sum() / (n1 - 1) + (c2 * c2).sum() / (n2 - 1) - 2 * tr_covmean)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature dimensions differ: {a.mu.shape[0]} ({a.feature or 'unknown network'}) vs "
                         f"{b.mu.shape[0]} ({b.feature or 'unknown network'}); the reference stats were made "
                         f"with another feature network")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) over ``splits`` contiguous chunks -> (mean, std).

    Contiguous, unshuffled chunks as in the ADM evaluator (torchmetrics shuffles with an unseeded
    permutation, which makes the number irreproducible). Samples generated per-class-balanced
    (label = index mod C) give every chunk every class.
    """
    x = torch.as_tensor(np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits),
                        dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] < splits:
        raise ValueError(f"inception_score needs (N, C) logits with N >= splits={splits}, got {tuple(x.shape)}")
    scores = []
    for chunk in torch.tensor_split(x, splits):
        logp = torch.log_softmax(chunk, dim=1)  # (n, C)
        logp_y = torch.logsumexp(logp, dim=0) - np.log(chunk.shape[0])  # (C,) log of the marginal
        kl = (logp.exp() * (logp - logp_y)).sum(1).mean()
        scores.append(float(kl.exp()))
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())


# -- files ----------------------------------------------------------------------------------------

def save_stats(path: str | Path, stats: FeatureStats) -> Path:
    """Writes ``mu``/``sigma`` (+ ``num_samples``, ``feature``) atomically (tmp file + os.replace)."""
    path = Path(path)
    extra = {}
    if stats.num_samples is not None:
        extra["num_samples"] = np.int64(stats.num_samples)
    if stats.feature is not None:
        extra["feature"] = np.array(stats.feature)
    # Into an open file: given a path, np.savez would append ".npz" to the temporary name.
    with atomic_writer(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=stats.mu, sigma=stats.sigma, **extra)
    return path


def load_stats(path: str | Path) -> FeatureStats:
    """Reads an ADM / U-ViT / pytorch-fid reference file or one of ours (keys ``mu``, ``sigma``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics file {path} does not exist (make one with `enat fid-stats`, "
                                f"or use the ADM / U-ViT ImageNet reference .npz)")
    with np.load(path, allow_pickle=False) as z:  # lazy: ADM files also hold 10k images in arr_0
        missing = [k for k in ("mu", "sigma") if k not in z.files]
        if missing:
            raise ValueError(f"{path} lacks key(s) {missing}; found {z.files}. Expected an ADM / U-ViT style "
                             f"statistics file with 'mu' (F,) and 'sigma' (F, F)")
        num = int(z["num_samples"]) if "num_samples" in z.files else None
        feature = str(z["feature"]) if "feature" in z.files else None
        return FeatureStats(z["mu"], z["sigma"], num_samples=num, feature=feature)
