"""Seeds: the one seed-mixing function of the package, and per-sample sampler generators.

A run's randomness is split into streams named by integer tuples, e.g. (recipe_seed, purpose,
step, micro-batch) in training, (seed, start step, epoch, rank, worker, purpose) in the data
reader, (seed, sample index) in sampling. ``mix_seed`` maps a tuple to a 63-bit seed by integer
mixing, so nearby tuples give unrelated streams and nothing depends on PYTHONHASHSEED.
Bottom of the import graph: imports nothing of the package.
"""
from __future__ import annotations

from typing import Iterable

import torch

SAMPLE_STREAM = 0x5A4D  # purpose tag of the sampler streams (keeps them apart from any other use of the seed)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers: distinct tuples give unrelated streams (a SplitMix64-style
    multiply-xorshift over the parts, each folded in before the next)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a sampling run with ``seed`` (``enat sample``, ``enat evaluate``)."""
    return mix_seed(seed, SAMPLE_STREAM, index)


def sample_generators(seed: int, indices: Iterable[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded with ``sample_seed(seed, i)``: sample i's draws do not depend
    on which batch, process or device count produced it (``generate(..., generator=<this list>)``)."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, int(i))) for i in indices]
