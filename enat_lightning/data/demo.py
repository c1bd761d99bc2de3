"""Embedded real demo data: scikit-learn's handwritten digits -> demo tokenizer -> token shards.

The digits (1 797 grey 8x8 images, 10 classes, BSD-3-Clause, bundled inside the scikit-learn wheel,
so nothing is downloaded) are upsampled bilinearly to 16x16 RGB in [0, 1]. A patch k-means VQ
(4x4 patches, 128 codes, fixed seed) turns each into a 4x4 grid of 16 tokens. Split: the last 20%
of every class (in dataset order) is validation. No flipped copies (has_flip false): a mirrored
2, 3, 4, 5, 6, 7 or 9 is not that digit, so flipping would teach the model wrong classes.

    python -m enat_lightning.data.demo            # or: enat tokenize demo / python data/build_demo.py
builds (seconds) data/demo/tokenizer.npz and data/demo/shards/{train,val}/ when absent.
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from enat_lightning.tokenizers.demo import DemoTokenizer

from .format import MANIFEST_NAME, Sample
from .writer import ShardSetWriter

IMAGE_SIZE = 16
PATCH = 4
CODEBOOK_SIZE = 128
NUM_CLASSES = 10
VAL_FRACTION = 0.2
SHARD_SIZE = 256
SEED = 0


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    tokenizer: Path
    train: Path  # shard directory (manifest.json inside)
    val: Path


def default_demo_dir() -> Path:
    """data/demo of the source checkout when the package runs from one, else ./data/demo."""
    repo = Path(__file__).resolve().parents[2]
    return repo / "data" / "demo" if (repo / "pyproject.toml").is_file() else Path("data/demo").resolve()


def demo_paths(root: str | Path | None = None) -> DemoPaths:
    root = Path(root) if root is not None else default_demo_dir()
    return DemoPaths(root, root / "tokenizer.npz", root / "shards" / "train", root / "shards" / "val")


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> images float32 (N, 3, 16, 16) in [0, 1], labels int64 (N,), is_val bool (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8), ink = bright
    x = F.interpolate(x, size=IMAGE_SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(NUM_CLASSES):
        idx = (labels == c).nonzero().flatten()
        n_val = round(len(idx) * VAL_FRACTION)
        is_val[idx[len(idx) - n_val:]] = True
    return x.expand(-1, 3, -1, -1).contiguous(), labels, is_val


def fit_demo_tokenizer(images: torch.Tensor, codebook_size: int = CODEBOOK_SIZE, seed: int = SEED) -> DemoTokenizer:
    """k-means (scikit-learn, fixed seed) over all 4x4 grey patches of ``images`` (B, 3, H, W)."""
    from sklearn.cluster import KMeans

    b, _, h, w = images.shape
    grey = images.mean(1)
    patches = grey.reshape(b, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 1, 3, 2, 4).reshape(-1, PATCH * PATCH)
    km = KMeans(n_clusters=codebook_size, n_init=1, random_state=seed).fit(patches.numpy().astype(np.float64))
    centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))  # (K, p*p)
    # sort codes by mean brightness so ids are stable and readable (0 = background)
    centroids = centroids[centroids.mean(1).argsort(stable=True)]
    return DemoTokenizer(centroids, PATCH, h)


def _dataset_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    return h.hexdigest()[:16]


def build_demo_data(root: str | Path | None = None, force: bool = False) -> DemoPaths:
    """Builds whatever is missing: the tokenizer (fit on the train split) and both shard sets.
    Shards made with another tokenizer file are rebuilt. ``force`` refits the tokenizer too."""
    paths = demo_paths(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    images, labels, is_val = load_digit_images()
    if force or not paths.tokenizer.is_file():
        fit_demo_tokenizer(images[~is_val]).save(paths.tokenizer)
    tok = DemoTokenizer.load(paths.tokenizer)
    data_hash = _dataset_hash(images, labels)
    for split, sel, out in (("train", ~is_val, paths.train), ("val", is_val, paths.val)):
        if not _split_current(out, tok):
            _clear(out)
            # keep the original load_digits index in the key
            idx = sel.nonzero().flatten()
            _write_indexed(out, tok, images[idx], labels[idx], idx, split, data_hash)
    return paths


def _write_indexed(out: Path, tok: DemoTokenizer, images, labels, idx, split: str, data_hash: str) -> None:
    ids = tok.encode(images)  # (N, 4, 4)
    job = {"kind": "demo", "split": split, "data": data_hash, "tokenizer": tok.weights_hash(), "shard_size": SHARD_SIZE}
    w = ShardSetWriter(out, job, codebook_size=tok.codebook_size, latent_side=tok.latent_side,
                       num_classes=NUM_CLASSES, tokenizer=tok.identity(), has_flip=False,
                       source={"dataset": "sklearn.datasets.load_digits", "split": split,
                               "resolution": IMAGE_SIZE, "licence": "BSD-3-Clause"},
                       prefix=split)
    for k in range(w.done_shards, -(-len(labels) // SHARD_SIZE)):
        sl = slice(k * SHARD_SIZE, (k + 1) * SHARD_SIZE)
        w.add_shard([Sample(key=f"d{int(i):04d}", tokens=t.numpy(), label=int(y))
                     for i, t, y in zip(idx[sl], ids[sl], labels[sl])])
    w.finish()


def _split_current(out: Path, tok: DemoTokenizer) -> bool:
    import json

    m = out / MANIFEST_NAME
    if not m.is_file():
        return False
    return json.loads(m.read_text()).get("tokenizer", {}).get("weights_sha256") == tok.weights_hash()


def _clear(out: Path) -> None:
    if out.is_dir():
        for p in list(out.glob("*.tar")) + list(out.glob(MANIFEST_NAME)) + list(out.glob(".progress.json")):
            p.unlink()


def ensure_demo_data(root: str | Path | None = None) -> DemoPaths:
    """The demo tokenizer and shards, built first if absent (seconds on one CPU core)."""
    paths = demo_paths(root)
    if paths.tokenizer.is_file():
        tok = DemoTokenizer.load(paths.tokenizer)
        if _split_current(paths.train, tok) and _split_current(paths.val, tok):
            return paths
    return build_demo_data(root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="build the embedded demo tokenizer and token shards")
    p.add_argument("--out", default=None, help="demo directory (default: data/demo of the checkout)")
    p.add_argument("--force", action="store_true", help="refit the tokenizer and rewrite the shards")
    args = p.parse_args(argv)
    paths = build_demo_data(args.out, force=args.force)
    print(f"demo tokenizer: {paths.tokenizer}\ntrain shards:   {paths.train}\nval shards:     {paths.val}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
