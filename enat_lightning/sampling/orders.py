"""Token orders: which masked positions a sampling step reveals (pure torch).

An order is ONE registered function (``@register_order("name")``) in this file. ``generate`` calls it
once before the first step with an ``OrderContext`` (batch, grid, device, generator); it returns the
per-step rule ``priority(confidence, masking, mask_temp) -> (B, L)``. The sampler keeps the
``n_{s+1}`` lowest priorities masked; visible positions must get +inf (``confidence`` already holds
+inf there). Randomness an order needs before sampling is drawn in the outer function (the
generator is then at the same point for every step after it).

  confidence  logp of the drawn token + tau_mask * Gumbel noise (official ENAT / MaskGIT; default)
  random      a uniformly random permutation per sample, drawn once before the first step
  halton      the 2-D Halton low-discrepancy order of Besnier et al., "Halton Scheduler for Masked
              Generative Image Transformer" (ICLR 2025, code valeoai/Halton-MaskGIT), the same for
              every sample and fixed before sampling

``random`` and ``halton`` never look at the network's outputs. Adding an order: one function
below plus its test; ``SamplerSettings.order`` accepts every registered name and refuses others.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from .noise import Generators, gumbel, uniform

# priority(confidence (B, L), masking (B, L) bool, mask_temp) -> priority (B, L)
Priority = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class OrderContext:
    """What an order may know before the first step."""

    batch: int
    grid: int
    device: torch.device
    generator: Generators


ORDERS: dict[str, Callable[[OrderContext], Priority]] = {}


def register_order(name: str):
    """Decorator: register ``fn(ctx: OrderContext) -> Priority`` as the token order ``name``."""
    def add(fn: Callable[[OrderContext], Priority]):
        if name in ORDERS:
            raise ValueError(f"token order {name!r} is already registered")
        ORDERS[name] = fn
        return fn
    return add


def get_order(name: str) -> Callable[[OrderContext], Priority]:
    if name not in ORDERS:
        raise ValueError(f"unknown token order {name!r}; choose from {list(ORDERS)}")
    return ORDERS[name]


def _fixed(prio: torch.Tensor) -> Priority:
    """A priority fixed before sampling: the masked positions take ``prio``, visible ones stay +inf."""
    return lambda conf, masking, mask_temp: torch.where(masking, prio, conf)


@register_order("confidence")
def confidence_order(ctx: OrderContext) -> Priority:
    """Official: the drawn token's logp plus Gumbel noise annealed by the mask temperature."""
    def priority(conf: torch.Tensor, masking: torch.Tensor, mask_temp: float) -> torch.Tensor:
        if mask_temp > 0:
            return conf + mask_temp * gumbel(conf.shape, ctx.generator, ctx.device)
        return conf
    return priority


@register_order("random")
def random_order(ctx: OrderContext) -> Priority:
    return _fixed(random_priority(ctx.batch, ctx.grid * ctx.grid, ctx.generator, ctx.device))  # (B, L)


@register_order("halton")
def halton_order(ctx: OrderContext) -> Priority:
    return _fixed(halton_priority(ctx.grid, ctx.batch, ctx.device))  # (B, L)


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
