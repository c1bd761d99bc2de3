"""Helpers for evaluation tests: a tiny generator, a toy tokenizer and a toy feature network."""
from __future__ import annotations

import torch

from enat_lightning.evaluation.features import Features, check_uint8_images
from enat_lightning.models import ENAT, ENATConfig

TINY = ENATConfig(codebook_size=16, num_classes=5, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)


def tiny_model(seed: int = 0) -> ENAT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ENAT(TINY).eval()


class PaletteTokenizer:
    """ids (B, h, w) -> images (B, 3, 2h, 2w): each code is a fixed colour (a 2x2 patch)."""

    codebook_size = 16
    downsample = 2

    def __init__(self):
        self.palette = torch.rand(16, 3, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1  # unclamped

    def encode(self, images):
        raise NotImplementedError

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.palette[ids].permute(0, 3, 1, 2)  # (B, 3, h, w)
        return x.repeat_interleave(2, 2).repeat_interleave(2, 3)

    def identity(self) -> dict:
        return {"kind": "palette"}


class ProjectionFeatures:
    """A fixed random projection of pixels -> 6 features and 5 logits."""

    name = "toy-projection"
    num_features = 6
    predicts_labels = True

    def __init__(self):
        g = torch.Generator().manual_seed(2)
        self.w = torch.randn(3 * 8 * 8, 6, generator=g, dtype=torch.float64)
        self.h = torch.randn(6, 5, generator=g, dtype=torch.float64)

    def __call__(self, images: torch.Tensor) -> Features:
        x = check_uint8_images(images).flatten(1).double() / 255.0
        f = torch.tanh(x @ self.w)
        return Features(f, f @ self.h)
