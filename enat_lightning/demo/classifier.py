"""The demo classifier: a small MLP trained on a demo data set's train digits.

Its 10 logits give the class accuracy of class-conditional samples (and "demo-IS"); its 64-d
penultimate activations give a cheap "demo-FID" used while training (the demo's reported FID uses the
real Inception-v3). Trained deterministically (fixed seed, seconds on a CPU) the first time it is
needed and cached to ``data/<data set>/classifier.pt`` (atomic write). One classifier per data set:
MNIST (the demo, 32x32) and scikit-learn's digits (the tests, 16x16).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from enat_lightning.fileio import atomic_torch_save
from enat_lightning.sampling.checkpoint import read_torch_file

from enat_lightning.evaluation.extractors import Features, check_uint8_images

from .data import DemoDataset, demo_paths, get_dataset, load_images
from enat_lightning.errors import InvalidInput, MissingInput

if TYPE_CHECKING:
    from enat_lightning.evaluation.frechet import FeatureStats

RECIPE_VERSION = 2  # bump when the architecture or training recipe changes (invalidates caches + stats)
FEATURE_NAME = f"demo-classifier-v{RECIPE_VERSION}:penultimate-64"


class DemoClassifier(nn.Module):
    """(B, 3, H, W) in [0, 1] -> features (B, 64), logits (B, C).

    Inputs are average-pooled to ``pool`` x ``pool`` first (the sklearn digits are upsampled 8x8
    images: 8 loses nothing; MNIST at 32x32: 16). An MLP trains in seconds on a CPU, where a CNN
    took minutes on two shared cores.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 256, feat_dim: int = 64, pool: int = 8):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool)  # any input size -> (B, 3, pool, pool)
        self.fc1 = nn.Linear(3 * pool * pool, hidden)
        self.fc2 = nn.Linear(hidden, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(self.pool(x).flatten(1)))  # (B, hidden)
        feat = F.relu(self.fc2(h))  # (B, 64)
        return feat, self.head(feat)


def train_demo_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 40, batch_size: int = 64,
                          lr: float = 1e-3, seed: int = 0, pool: int = 8) -> DemoClassifier:
    """Deterministic training: initialisation and batch order come from ``seed`` only.

    Runs on one thread: these matmuls are tiny, and on a shared CPU a second thread made training
    10x slower (thread contention), not faster.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(images, labels, epochs, batch_size, lr, seed, pool)
    finally:
        torch.set_num_threads(threads)


def _train(images, labels, epochs, batch_size, lr, seed, pool) -> DemoClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DemoClassifier(num_classes=int(labels.max()) + 1, pool=pool)
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


def pool_size(ds: DemoDataset) -> int:
    return 8 if ds.image_size <= 16 else ds.image_size // 2


def default_classifier_path(dataset: str | DemoDataset = "mnist") -> Path:
    return demo_paths(dataset=dataset).root / "classifier.pt"


MAKE_CLASSIFIER = "make it with `make demo` (or pass the feature network 'demo' to train it into data/demo/)"


def build_demo_classifier(path: str | Path | None = None, force: bool = False,
                          dataset: str | DemoDataset = "mnist") -> Path:
    """Trains the classifier on the train split of ``dataset`` and saves it atomically, unless a file of
    the current recipe is already there (the file is a cache: one of an older recipe is rebuilt)."""
    ds = get_dataset(dataset)
    path = Path(path) if path is not None else default_classifier_path(ds)
    if path.is_file() and not force:
        try:
            meta = read_torch_file(path, what="demo classifier", make_hint=MAKE_CLASSIFIER)["meta"]
            current = meta["recipe_version"] == RECIPE_VERSION and meta["dataset"] == ds.name
        except Exception:  # unreadable / foreign file: rebuild it
            current = False
        if current:
            return path
    images, labels, is_val = load_images(ds)
    net = train_demo_classifier(images[~is_val], labels[~is_val], pool=pool_size(ds))
    meta = {"recipe_version": RECIPE_VERSION, "dataset": ds.name, "num_classes": int(labels.max()) + 1,
            "image_size": int(images.shape[-1]), "pool": pool_size(ds),
            "val_accuracy": accuracy(net, images[is_val], labels[is_val])}
    return atomic_torch_save({"state_dict": net.state_dict(), "meta": meta}, path)


def load_demo_features(arg: str | None = None, device: str | torch.device = "cpu") -> "DemoClassifierFeatures":
    """The ``demo[:ARG]`` feature spec: ARG None -> the MNIST demo's classifier, a data set name
    (``digits``) -> that data set's, anything else -> a classifier file."""
    from .data import DATASETS

    if arg is None or arg in DATASETS:
        return DemoClassifierFeatures.load(build_demo_classifier(dataset=arg or "mnist"), device)
    return DemoClassifierFeatures.load(arg, device)


class DemoClassifierFeatures:
    """FeatureExtractor over the cached demo classifier."""

    num_features = 64
    predicts_labels = True
    no_is_reason = None

    def __init__(self, net: DemoClassifier, meta: dict, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.meta = meta
        self.name = f"{FEATURE_NAME}:{meta.get('dataset', 'digits')}"
        self.description = f"demo classifier v{RECIPE_VERSION} ({meta.get('dataset')}), penultimate 64-d"

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "DemoClassifierFeatures":
        """From ``path`` (default data/demo/classifier.pt, trained first when absent)."""
        if path is None:
            path = build_demo_classifier()
        path = Path(path)
        if not path.is_file():
            raise MissingInput(f"demo classifier {path} does not exist; build it with `make demo` "
                                    f"or pass 'demo' to train it into data/demo/")
        ck = read_torch_file(path, what="demo classifier", make_hint=MAKE_CLASSIFIER)
        meta = ck.get("meta", {})
        if meta.get("recipe_version") != RECIPE_VERSION:
            raise InvalidInput(f"{path} was made by demo-classifier recipe v{meta.get('recipe_version')}, this code "
                             f"expects v{RECIPE_VERSION}; delete it to retrain")
        net = DemoClassifier(num_classes=meta["num_classes"], pool=meta.get("pool", 8))
        net.load_state_dict(ck["state_dict"])
        out = cls(net, meta, device)
        out.weights_path = path  # its sha256 goes into the protocol record of every result
        return out

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        x = check_uint8_images(images).to(self.device).float() / 255.0
        feat, logits = self.net(x)
        return Features(feat.cpu(), logits.cpu())


def demo_reference_stats(spec: str, extractor) -> "FeatureStats":
    """``[DATASET:]SPLIT`` (split: train, val or all; data set default mnist) -> statistics of those real
    digits under ``extractor`` (the ``demo:...`` reference spec of ``evaluation.reference.load_reference``)."""
    from enat_lightning.evaluation.reference import reference_stats

    dataset, _, split = spec.rpartition(":")
    images, _, is_val = load_images(dataset or "mnist")
    keep = {"train": ~is_val, "val": is_val, "all": torch.ones_like(is_val)}.get(split)
    if keep is None:
        raise InvalidInput(f"demo reference {spec!r}: the split must be 'train', 'val' or 'all', got {split!r}")
    return reference_stats(images[keep], extractor)


def demo_reference_images(spec: str) -> torch.Tensor:
    """``[DATASET:]SPLIT`` -> those real digits, float (N, 3, H, W) in [0, 1] (the ``demo:...`` reference of
    ``evaluation.reference_batch.load_reference_spec``: statistics and images for precision / recall)."""
    dataset, _, split = spec.rpartition(":")
    images, _, is_val = load_images(dataset or "mnist")
    keep = {"train": ~is_val, "val": is_val, "all": torch.ones_like(is_val)}.get(split)
    if keep is None:
        raise InvalidInput(f"demo reference {spec!r}: the split must be 'train', 'val' or 'all', got {split!r}")
    return images[keep]


# Register the demo's feature network and reference digits with the evaluation code below this package
# (``feature: demo``, ``ref_stats: demo:val``): the evaluation package never imports the demo.
def _register() -> None:
    from enat_lightning.evaluation.features import register_feature_network
    from enat_lightning.evaluation.reference import register_reference
    from enat_lightning.evaluation.reference_batch import register_reference_images
    from enat_lightning.image_sets import register_image_set

    register_feature_network("demo", load_demo_features)
    register_reference("demo", demo_reference_stats)
    register_reference_images("demo", demo_reference_images)
    register_image_set("demo", load_images)


_register()
