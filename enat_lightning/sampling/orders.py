"""Token orders: which masked positions a sampling step reveals (pure torch).

Every order produces a per-position *priority* (B, L); the sampler keeps the ``n_{s+1}`` lowest
priorities masked, exactly as it does with the official confidence. Visible positions get +inf.

  confidence  logp of the drawn token + tau_mask * Gumbel noise (official ENAT / MaskGIT; default)
  random      a uniformly random permutation per sample, drawn once before the first step
  halton      the 2-D Halton low-discrepancy order of Besnier et al., "Halton Scheduler for Masked
              Generative Image Transformer" (ICLR 2025, code valeoai/Halton-MaskGIT), the same for
              every sample and fixed before sampling

``random`` and ``halton`` never look at the network's outputs.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .noise import Generators, uniform

ORDERS = ("confidence", "random", "halton")


def _radical_inverse(i: int, base: int) -> float:
    """The i-th element of the van der Corput sequence in ``base`` (digits of i mirrored)."""
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


@lru_cache(maxsize=16)
def halton_positions(grid: int) -> tuple[int, ...]:
    """Raster indices of a grid x grid map in Halton order (each position once).

    Construction of the reference (``build_halton_mask``): point i = 1, 2, ... is (row, col) =
    floor(grid * (h_2(i), h_3(i))) with h_b the radical inverse in base b, computed in float32; a
    point that falls on an already listed cell is dropped. The reference stops after 10,000 points;
    we continue until every cell is listed (identical whenever 10,000 points cover the grid, as
    they do for the 16x16 and 32x32 grids; checked in tests).
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    L = grid * grid
    seen: set[int] = set()
    seq: list[int] = []
    i = 0
    while len(seq) < L:
        i += 1
        pt = torch.tensor([_radical_inverse(i, 2), _radical_inverse(i, 3)], dtype=torch.float32)
        row, col = (int(v) for v in torch.floor(pt * grid))
        idx = row * grid + col
        if idx not in seen:
            seen.add(idx)
            seq.append(idx)
        if i > 1000 * L + 10_000:  # cannot happen for a Halton sequence; guards a hang
            raise RuntimeError(f"Halton sequence did not cover a {grid}x{grid} grid")
    return tuple(seq)


def halton_priority(grid: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B, L) float priorities: the k-th Halton position gets L - k (revealed first = highest)."""
    L = grid * grid
    prio = torch.empty(L, dtype=torch.float32)
    prio[torch.tensor(halton_positions(grid))] = torch.arange(L, 0, -1, dtype=torch.float32)
    return prio.to(device).expand(batch, L)


def random_priority(batch: int, seq_len: int, generator: Generators, device: torch.device) -> torch.Tensor:
    """(B, L) iid uniform priorities from ``generator`` (a random permutation per sample; one generator
    per row makes a sample's order independent of its batch)."""
    return uniform((batch, seq_len), generator, device)
