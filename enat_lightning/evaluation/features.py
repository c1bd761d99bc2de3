"""Pluggable feature networks for FID / IS: the standard Inception-v3 and the demo classifier.

Every extractor takes uint8 images (B, 3, H, W) (what a saved sample file holds, so scoring
in-memory samples and a ``samples.npz`` gives identical numbers) and returns pooled features
(B, F) and class logits (B, C) (for IS; None if the network has no classifier).

``name`` is written into statistics files; evaluation refuses to compare features of different
networks. ``predicts_labels`` says the logits index the generator's own classes, so the accuracy
of class-conditional samples can be reported (the demo classifier; not Inception's 1008 classes).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import torch

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WHERE_FROM = (
    f"the standard FID Inception-v3 weights are the file `{INCEPTION_FILE}` (the TF 'inception-2015-12-05' "
    f"graph of the original FID code, converted to PyTorch): a release asset of mseitzer/pytorch-fid "
    f"('fid_weights' release); torch-fidelity distributes the same file as "
    f"`weights-inception-2015-12-05-6726825d.pth` (its v0.2.0 release). Download it once on a machine "
    f"with internet access and pass its path; nothing is downloaded at run time")


class Features(NamedTuple):
    features: torch.Tensor  # (B, F) float
    logits: torch.Tensor | None  # (B, C) float, or None


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str
    num_features: int
    predicts_labels: bool

    def __call__(self, images: torch.Tensor) -> Features: ...


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images (B, 3, H, W), nominally [0, 1] -> uint8 (B, 3, H, W): clamp, then round half up
    (floor(255 x + 0.5)), exactly as ``sampling.io.to_uint8`` writes ``samples.npz``."""
    return torch.floor(images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def check_uint8_images(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"feature extractors take uint8 images (B, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    return images


class InceptionV3Features:
    """torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's FID Inception) from a local weights file.

    Features: the 2048-d pool3 activations (FID); logits: the 1008 "unbiased" logits (IS), both as
    torchmetrics / torch-fidelity compute them (images resized to 299 inside the network).
    """

    name = "inception-v3-2015-12-05:pool3-2048"
    num_features = 2048
    predicts_labels = False

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu"):
        path = Path(weights).expanduser()
        if not path.is_file():  # checked before importing anything: the error must name the path
            raise FileNotFoundError(f"Inception weights file {path} does not exist; {INCEPTION_WHERE_FROM}")
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise ImportError("the Inception feature extractor needs torch-fidelity (torchmetrics' FID network): "
                              "pip install torch-fidelity, together with the torchvision build that matches your "
                              "torch (e.g. from the same index as torch)")
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path)).to(device)
        self.device = torch.device(device)
        self.weights_path = path

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        x = check_uint8_images(images).to(self.device)
        # _torch_fidelity_forward returns every requested layer; ``forward`` would keep only the first.
        pool, logits = self.net._torch_fidelity_forward(x)
        return Features(pool.reshape(x.shape[0], -1).float().cpu(), logits.float().cpu())


def load_feature_extractor(spec: str, device: str | torch.device = "cpu") -> FeatureExtractor:
    """``demo`` / ``demo:CLASSIFIER.pt`` -> demo classifier (built and cached on first use);
    ``inception:PATH`` or a ``.pth`` path -> Inception-v3 from that weights file."""
    spec = str(spec)
    if spec == "demo" or spec.startswith("demo:"):
        from .demo_classifier import DemoClassifierFeatures

        return DemoClassifierFeatures.load(None if spec == "demo" else spec.split(":", 1)[1], device=device)
    if spec.startswith("inception:"):
        return InceptionV3Features(spec.split(":", 1)[1], device=device)
    if spec.endswith((".pth", ".pt")):
        return InceptionV3Features(spec, device=device)
    raise ValueError(f"unknown feature network {spec!r}: use 'demo', 'demo:PATH', 'inception:PATH' or a path to "
                     f"{INCEPTION_FILE}")
