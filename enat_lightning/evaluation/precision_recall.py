"""Improved precision and recall (Kynkäänniemi et al. 2019, k-NN manifolds) as the ADM evaluator reports them.

Shape letters: R reference rows, S sample rows, F feature dimension, r / s one block of them.

Each set spans a "manifold": the union of balls around its points, the radius of a point being the
distance to its k-th nearest neighbour in its own set (k = 3; the point itself is neighbour 0).

* precision = fraction of samples inside the reference manifold (fidelity),
* recall    = fraction of references inside the sample manifold (diversity).

Semantics of ``guided-diffusion/evaluations/evaluator.py`` (``ManifoldEstimator``), written anew:
distances are *squared* Euclidean, ``max(|u|^2 - 2 u.v + |v|^2, 0)``; a radius is entry k of the
sorted distances of a point to its whole set, itself included (so a duplicate of a point counts as a
neighbour); "inside" is ``distance <= radius``. ADM computes distances in float16 first and falls back
to float32 when a block overflows; here they are float32 (``dtype`` can make them float64), which moves
only points within ~1e-3 relative of a ball's surface (docs/evaluation.md).

Memory: every pass walks (r, s) blocks of ``row_batch x col_batch`` distances and keeps only a running
top-(k+1) per row, so 50k samples x 10k references need one 10k x 10k block at a time (400 MB in
float32), on the GPU when the features are there.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

K_NEIGHBOURS = 3  # ADM evaluator / Kynkäänniemi et al.: nhood_sizes=(3,)
BLOCK = 10_000  # ADM's row_batch_size = col_batch_size


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


def _as_tensor(x, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"precision/recall need features (N, F), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def squared_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(r, F), (s, F) -> (r, s) squared Euclidean distances, ADM's expansion clamped at 0."""
    nu = (u * u).sum(1, keepdim=True)  # (r, 1)
    nv = (v * v).sum(1)[None]  # (1, s)
    return (nu - 2 * u @ v.T + nv).clamp_min(0)


def manifold_radii(features, k: int = K_NEIGHBOURS, block: int = BLOCK, device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, F) features -> (N,) squared distance of each point to its k-th nearest neighbour in the set
    (the point itself is neighbour 0), computed in (block x block) pieces."""
    x = _as_tensor(features, device, dtype)
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"the k-NN manifold with k={k} needs more than {k} points, got {n}")
    radii = torch.empty(n, dtype=dtype, device=x.device)
    for a in range(0, n, block):
        rows = x[a:a + block]
        best = None  # (r, k+1) smallest distances so far
        for b in range(0, n, block):
            d = squared_distances(rows, x[b:b + block])  # (r, s)
            cand = d if best is None else torch.cat([best, d], 1)
            best = cand.topk(min(k + 1, cand.shape[1]), dim=1, largest=False).values
        radii[a:a + block] = best[:, k]
    return radii


def precision_recall(ref_features, sample_features, k: int = K_NEIGHBOURS, block: int = BLOCK, device=None,
                     dtype: torch.dtype = torch.float32) -> PrecisionRecall:
    """Precision and recall of samples (S, F) against references (R, F), both in one pass over the
    (R x S) distance blocks, as ``ManifoldEstimator.evaluate_pr`` counts them."""
    ref = _as_tensor(ref_features, device, dtype)
    smp = _as_tensor(sample_features, device, dtype)
    if ref.shape[1] != smp.shape[1]:
        raise ValueError(f"feature dimensions differ: references {ref.shape[1]}, samples {smp.shape[1]}")
    r_ref = manifold_radii(ref, k, block, ref.device, dtype)  # (R,)
    r_smp = manifold_radii(smp, k, block, smp.device, dtype)  # (S,)
    ref_in = torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)  # reference inside the sample manifold
    smp_in = torch.zeros(smp.shape[0], dtype=torch.bool, device=smp.device)  # sample inside the reference manifold
    for a in range(0, ref.shape[0], block):
        for b in range(0, smp.shape[0], block):
            d = squared_distances(ref[a:a + block], smp[b:b + block])  # (r, s)
            ref_in[a:a + block] |= (d <= r_smp[None, b:b + block]).any(1)
            smp_in[b:b + block] |= (d <= r_ref[a:a + block, None]).any(0)
    return PrecisionRecall(float(smp_in.double().mean()), float(ref_in.double().mean()))
