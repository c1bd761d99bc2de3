"""The interface every image tokenizer implements, and how a new one joins the registry.

A tokenizer maps images to grids of discrete token ids and back:

    encode(images)  float images in [0, 1], (B, 3, H, W)  ->  int64 ids (B, *token_shape)
    decode(ids)     ids (B, *token_shape)                 ->  float32 images in [0, 1], (B, 3, H, W)
    codebook_size   number of distinct ids (the generator's ``codebook_size`` must equal it)
    token_shape     the id grid of one image at the tokenizer's native resolution, e.g. (16, 16)
    downsample      pixels per token side (H = token_shape[0] * downsample); conv tokenizers accept any
                    H, W divisible by it
    identity()      a JSON-able dict ``{"kind", "config", "weights_sha256", ...}`` recorded in shard
                    manifests, so data tokenized by one tokenizer is never trained on / decoded by another

Each implementation converts its own pixel range inside (the MaskGIT VQGAN eats [0, 1], most others
[-1, 1]): callers always pass and receive [0, 1]. ``decode`` runs in fp32 (clamped to [0, 1]) even when the
caller is under autocast.

Configuration: everywhere a tokenizer is named (YAML, every command's ``--tokenizer``, Python) it is the
one config form ``{class_path: ..., init_args: {...}}``; ``enat_lightning.tokenizers.load_tokenizer`` is the
only parser. ``class_path`` is a registry name (``TOKENIZERS`` in tokenizers/__init__.py, e.g.
``enat_lightning.tokenizers.VQGAN``) or the dotted path of any importable class implementing this protocol;
``init_args`` go to the class's ``from_config(**init_args)`` classmethod, which builds a ready tokenizer in
eval mode from YAML types (paths, numbers, dicts) -- the constructor stays free to take typed objects.

Adding a tokenizer = one class with the members below plus ``from_config``, and one line in ``TOKENIZERS``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


TRAINED_KEY = "enat_tokenizer"  # checkpoint entry naming the class of a tokenizer trained with `enat fit`


@runtime_checkable
class Tokenizer(Protocol):
    """Images in [0, 1] <-> grids of discrete token ids (see the module docstring)."""

    codebook_size: int
    token_shape: tuple[int, ...]
    downsample: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, ids: torch.Tensor) -> torch.Tensor: ...

    def identity(self) -> dict: ...


def check_images(images: torch.Tensor, downsample: int, channels: int = 3) -> None:
    """The input contract of ``encode``: float (B, C, H, W) with H, W multiples of ``downsample``."""
    if images.dim() != 4 or images.shape[1] != channels or images.shape[2] % downsample or images.shape[3] % downsample:
        raise ValueError(f"images must be (B, {channels}, H, W) with H and W multiples of {downsample}, "
                         f"got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise ValueError(f"images must be float in [0, 1] (pixel/255), got dtype {images.dtype}")


def check_ids(ids: torch.Tensor, codebook_size: int, ndim: int = 2) -> None:
    """The input contract of ``decode``: integer ids (B, *grid) inside [0, codebook_size)."""
    if ids.dim() != ndim + 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be an integer tensor (B, {', '.join('hw'[:ndim])}), got {ids.dtype} "
                         f"{tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= codebook_size):
        raise ValueError(f"token ids must lie in [0, {codebook_size}), got range [{int(ids.min())}, {int(ids.max())}]")


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Decoder output -> the protocol's fp32 images in [0, 1]."""
    return images.float().clamp(0, 1)
