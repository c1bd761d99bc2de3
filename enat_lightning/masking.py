"""The training recipe's random mechanics as pure functions (paper §3; the official recipe: docs/training.md).

Shape letters: B batch, L = grid**2 tokens (raster order), V codebook size.

Every function takes an explicit ``torch.Generator`` and draws on CPU (then moves results to the
tokens' device), so a (seed, step) pair fixes every mask, label drop and reuse coin on any device,
and a resumed run repeats the draws of an uninterrupted one. Imports torch only.

``shard=(rank, world)``: the draws are made for the *global* batch of B * world rows and this
process keeps rows rank, rank + world, ... (the order of a non-shuffling DistributedSampler), so
data-parallel training sees exactly the masks of a single process on the same global batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sample_mask_ratio(generator: torch.Generator, a: float = 12.0, b: float = 3.0) -> float:
    """One mask ratio r ~ Beta(a, b) for a whole batch (official: Beta(12, 3), mean 0.8).

    The batch shares r because the disentangled encoder gathers a fixed number of visible tokens.
    Drawn as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) so that the generator is honoured
    (``torch.distributions.Beta`` has no generator argument).
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"mask ratio Beta(a, b) needs a > 0 and b > 0, got a={a}, b={b}")
    # torch._standard_gamma is the sampler behind torch.distributions.Gamma, and takes a generator.
    x = torch._standard_gamma(torch.tensor([a, b], dtype=torch.float64), generator=generator)  # (2,)
    return float(x[0] / (x[0] + x[1]))


def num_masked(seq_len: int, ratio: float) -> int:
    """clamp(round(L * r), 1, L - 1): at least one token to predict and one to condition on."""
    if seq_len < 2:
        raise ValueError(f"need at least 2 tokens to mask some and keep some, got L={seq_len}")
    return int(min(max(round(seq_len * ratio), 1), seq_len - 1))


Shard = tuple[int, int]  # (rank, world size)


def _check_shard(shard: Shard) -> tuple[int, int]:
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    return rank, world


def random_positions(shape: tuple[int, int], count: int, generator: torch.Generator,
                     eligible: torch.Tensor | None = None, shard: Shard = (0, 1)) -> torch.Tensor:
    """(B, L) bool with exactly ``count`` True per row, uniform among ``eligible`` positions.

    Uniform choice by ``argsort(rand)``: ineligible positions get score 2 so they sort last.
    """
    B, L = shape
    rank, world = _check_shard(shard)
    scores = torch.rand(B * world, L, generator=generator)[rank::world]  # (B, L) on CPU
    if eligible is not None:
        eligible = eligible.cpu()
        avail = eligible.sum(dim=1)
        if bool((avail < count).any()):
            raise ValueError(f"cannot choose {count} positions per row; some rows have only "
                             f"{int(avail.min())} eligible positions")
        scores = torch.where(eligible, scores, torch.full_like(scores, 2.0))
    order = torch.argsort(scores, dim=1)[:, :count]  # (B, count)
    return torch.zeros(B, L, dtype=torch.bool).scatter_(1, order, True)


def sample_mask(tokens: torch.Tensor, ratio: float, generator: torch.Generator,
                shard: Shard = (0, 1)) -> torch.Tensor:
    """(B, L) bool, True = [MASK]; every row masks the same number ``num_masked(L, ratio)``."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
    B, L = tokens.shape
    return random_positions((B, L), num_masked(L, ratio), generator, shard=shard).to(tokens.device)


def sample_reuse_mask(masking: torch.Tensor, generator: torch.Generator, shard: Shard = (0, 1),
                      fraction: float | None = None) -> torch.Tensor:
    """The "previous step" mask of a reuse forward (§3.1): a superset of ``masking`` (B, L).

    k = round(U * #visible) further visible tokens are masked, U ~ Uniform(0, 1) one scalar per
    batch, the same k on every row, chosen uniformly among each row's visible tokens.
    ``fraction``: a fixed U in [0, 1] instead of the draw (the generator advances as with a draw),
    e.g. for timing both codes at the same k (benchmarks/vs_official.py).
    """
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    visible = ~masking.cpu()  # (B, L)
    n_vis = visible.sum(dim=1)
    if bool((n_vis != n_vis[0]).any()):
        raise ValueError(f"every row must have the same number of visible tokens, got {n_vis.tolist()}")
    u = float(torch.rand((), generator=generator))
    u = u if fraction is None else fraction
    k = int(round(int(n_vis[0]) * u))
    extra = random_positions(tuple(masking.shape), k, generator, eligible=visible, shard=shard)
    return masking | extra.to(masking.device)


def apply_mask(tokens: torch.Tensor, masking: torch.Tensor, mask_id: int) -> torch.Tensor:
    """tokens (B, L) with masked positions replaced by the [MASK] id."""
    return tokens.masked_fill(masking, mask_id)


def _masked_targets(targets: torch.Tensor, masking: torch.Tensor, num_masked: int | None) -> torch.Tensor:
    """targets (B, L) at the masked positions, raster order within each row, rows in order -> (B*Lm,).

    With the per-row count known (``num_masked``) this is a gather of fixed size; boolean indexing
    would read the count back from the device (a host sync on a GPU).
    """
    if num_masked is None:
        return targets[masking]
    L = masking.shape[1]
    idx = torch.argsort(masking.to(torch.uint8), dim=1, stable=True)[:, L - num_masked:]  # (B, Lm)
    return targets.gather(1, idx).reshape(-1)


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, masking: torch.Tensor,
              smoothing: float = 0.1, num_masked: int | None = None) -> torch.Tensor:
    """Cross-entropy on masked positions only, mean over masked tokens, with label smoothing.

    logits: (B, L, V) for every position, or (B, Lm, V) for the masked positions in raster order
    (``logits_at="masked"``); targets (B, L) original ids; masking (B, L) bool. ``num_masked``:
    the [MASK] count of every row when the caller knows it (no device read-back for the layout
    (B, Lm, V)).
    """
    if logits.shape[:2] == masking.shape:
        tgt, flat = targets[masking], logits[masking]  # (B*Lm,), (B*Lm, V)
    else:
        tgt = _masked_targets(targets, masking, num_masked)  # (B*Lm,) raster order within each row
        flat = logits.reshape(-1, logits.shape[-1])  # (B*Lm, V), already the masked positions
    if flat.shape[0] != tgt.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match {tgt.shape[0]} masked positions")
    return F.cross_entropy(flat.float(), tgt, label_smoothing=smoothing)


def masked_accuracy(logits: torch.Tensor, targets: torch.Tensor, masking: torch.Tensor,
                    num_masked: int | None = None) -> torch.Tensor:
    """Share of masked positions whose argmax equals the target (same layouts as ``masked_ce``)."""
    if logits.shape[:2] == masking.shape:
        tgt, flat = targets[masking], logits[masking]
    else:
        tgt, flat = _masked_targets(targets, masking, num_masked), logits.reshape(-1, logits.shape[-1])
    return (flat.argmax(dim=-1) == tgt).float().mean()


@dataclass(frozen=True)
class Labels:
    """Labels after classifier-free-guidance dropout.

    data: after the dataset-level drop only (p_uncond) -- what the EMA reuse teacher sees, since the
          official teacher runs in eval mode where the network's own class dropout is off.
    net:  after both drops -- what the online network trains on.
    """

    data: torch.Tensor
    net: torch.Tensor


def prepare_labels(labels: torch.Tensor, p_uncond: float, class_dropout_prob: float, null_label: int,
                   generator: torch.Generator, shard: Shard = (0, 1)) -> Labels:
    """Replaces labels (B,) by ``null_label`` from both official sources (the official recipe, docs/training.md):

    (i) the dataset's p_uncond (0.15), (ii) the network's class dropout (0.1) in train mode.
    Effective null probability 1 - (1 - p_uncond)(1 - class_dropout_prob) (0.235 by default).
    """
    for name, p in (("p_uncond", p_uncond), ("class_dropout_prob", class_dropout_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    rank, world = _check_shard(shard)
    u = torch.rand(2, labels.shape[0] * world, generator=generator)[:, rank::world].to(labels.device)  # (2, B)
    null = torch.full_like(labels, null_label)
    data = torch.where(u[0] < p_uncond, null, labels)
    return Labels(data=data, net=torch.where(u[1] < class_dropout_prob, null, data))
