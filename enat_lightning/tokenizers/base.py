"""The interface every image tokenizer implements (VQGAN, the demo patch-VQ)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Tokenizer(Protocol):
    """Images <-> grids of discrete token ids.

    encode: float images in [0, 1], (B, 3, H, W) -> int64 ids (B, H/f, W/f), f = ``downsample``.
    decode: ids (B, h, w) -> float images (B, 3, h*f, w*f), unclamped.
    identity(): a JSON-able dict (kind, config, weights hash) recorded in shard manifests so data
    tokenized with one tokenizer is never trained/decoded with another.
    """

    codebook_size: int
    downsample: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, ids: torch.Tensor) -> torch.Tensor: ...

    def identity(self) -> dict: ...
