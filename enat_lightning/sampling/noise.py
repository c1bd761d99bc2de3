"""The sampler's random draws: uniform and Gumbel noise from one generator for the batch, or from one
generator per row (``seeding.sample_generators``), so a sample's noise never depends on its batch."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Generators = Optional[Union[torch.Generator, Sequence[torch.Generator]]]  # one for the batch, or one per row


def uniform(shape: tuple[int, ...], generator: Generators, device: torch.device) -> torch.Tensor:
    """U[0, 1) noise of ``shape`` drawn on the generator's device, returned on ``device``.

    With a sequence of generators (one per row, ``shape[0]`` of them) row i draws only from generator i.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
        return torch.cat([uniform((1, *shape[1:]), g, device) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def gumbel(shape: tuple[int, ...], generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise (per-row generators as in ``uniform``)."""
    u = uniform(shape, generator, device)
    u.clamp_(min=torch.finfo(u.dtype).tiny)  # rand may return exactly 0 -> -log(-log 0) = -inf
    return -torch.log(-torch.log(u))
