"""The demo's feature network: a small CNN trained on the demo digits ("demo-FID", "demo-IS").

Trained deterministically (fixed seed, a few epochs on the 16x16 RGB digits of ``data/demo``,
seconds on a CPU) the first time it is needed and cached to ``data/demo/classifier.pt``
(atomic write). Its 64-d penultimate activations are the FID features; its 10 logits give IS and
the accuracy of class-conditional samples. demo-FID is NOT comparable with ImageNet FID: other
network, other data, 10 classes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enat_lightning.fileio import atomic_torch_save

from .features import Features, check_uint8_images

RECIPE_VERSION = 1  # bump when the architecture or training recipe changes (invalidates caches + stats)
FEATURE_NAME = f"demo-classifier-v{RECIPE_VERSION}:penultimate-64"


class DemoClassifier(nn.Module):
    """(B, 3, H, W) in [0, 1] -> features (B, 64), logits (B, C).

    The digits are upsampled 8x8 images, so pooling back to 8x8 loses nothing; an MLP on 8x8x3
    trains in about a second on a CPU, where a CNN at 16x16 took a minute on two shared cores.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 256, feat_dim: int = 64):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(8)  # any input size -> (B, 3, 8, 8)
        self.fc1 = nn.Linear(3 * 64, hidden)
        self.fc2 = nn.Linear(hidden, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(self.pool(x).flatten(1)))  # (B, hidden)
        feat = F.relu(self.fc2(h))  # (B, 64)
        return feat, self.head(feat)


def train_demo_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 80, batch_size: int = 64,
                          lr: float = 1e-3, seed: int = 0) -> DemoClassifier:
    """Deterministic training: initialisation and batch order come from ``seed`` only.

    Runs on one thread: these matmuls are tiny, and on a shared CPU a second thread made training
    10x slower (thread contention), not faster.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(images, labels, epochs, batch_size, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _train(images, labels, epochs, batch_size, lr, seed) -> DemoClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DemoClassifier(num_classes=int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            # one-pixel random shifts: generated digits are not centred exactly like the data
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            x = torch.roll(images[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(x)[1], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: DemoClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((net(images)[1].argmax(1) == labels).float().mean())


def default_classifier_path() -> Path:
    from enat_lightning.data.demo import demo_paths

    return demo_paths().root / "classifier.pt"


def build_demo_classifier(path: str | Path | None = None, force: bool = False) -> Path:
    """Trains the classifier on the demo train split and saves it atomically, unless a file of the
    current recipe is already there (the file is a cache: one of an older recipe is rebuilt)."""
    path = Path(path) if path is not None else default_classifier_path()
    if path.is_file() and not force:
        try:
            current = torch.load(path, map_location="cpu", weights_only=True)["meta"]["recipe_version"] == RECIPE_VERSION
        except Exception:  # unreadable / foreign file: rebuild it
            current = False
        if current:
            return path
    from enat_lightning.data.demo import load_digit_images

    images, labels, is_val = load_digit_images()
    net = train_demo_classifier(images[~is_val], labels[~is_val])
    meta = {"recipe_version": RECIPE_VERSION, "num_classes": int(labels.max()) + 1,
            "image_size": int(images.shape[-1]), "val_accuracy": accuracy(net, images[is_val], labels[is_val])}
    return atomic_torch_save({"state_dict": net.state_dict(), "meta": meta}, path)


class DemoClassifierFeatures:
    """FeatureExtractor over the cached demo classifier."""

    name = FEATURE_NAME
    num_features = 64
    predicts_labels = True

    def __init__(self, net: DemoClassifier, meta: dict, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.meta = meta

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "DemoClassifierFeatures":
        """From ``path`` (default data/demo/classifier.pt, trained first when absent)."""
        if path is None:
            path = build_demo_classifier()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"demo classifier {path} does not exist; build it with "
                                    f"`enat fid-stats --demo` or pass 'demo' to train it into data/demo/")
        ck = torch.load(path, map_location="cpu", weights_only=True)
        meta = ck.get("meta", {})
        if meta.get("recipe_version") != RECIPE_VERSION:
            raise ValueError(f"{path} was made by demo-classifier recipe v{meta.get('recipe_version')}, this code "
                             f"expects v{RECIPE_VERSION}; delete it to retrain")
        net = DemoClassifier(num_classes=meta["num_classes"])
        net.load_state_dict(ck["state_dict"])
        return cls(net, meta, device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        x = check_uint8_images(images).to(self.device).float() / 255.0
        feat, logits = self.net(x)
        return Features(feat.cpu(), logits.cpu())
