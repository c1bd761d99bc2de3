"""DemoTokenizer: a patch k-means vector quantiser for the embedded demo data (MNIST, 8x8 digits).

Each non-overlapping p x p patch of the grey image is replaced by the id of its nearest centroid
(squared Euclidean distance); decoding pastes the centroids back. No network, so it is exact,
tiny (a few KB of centroids) and fits on CPU in seconds (enat_lightning/demo/data.py fits it).

Shapes: B batch, H = W image side, p patch side, h = w = H / p token side, K codebook size.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from enat_lightning.fileio import atomic_write_bytes
from enat_lightning.errors import InvalidInput, MissingInput


def default_data_root() -> Path:
    """data/ of the source checkout when the package runs from one, else ./data."""
    repo = Path(__file__).resolve().parents[2]
    return repo / "data" if (repo / "pyproject.toml").is_file() else Path("data").resolve()


def default_demo_tokenizer() -> Path:
    """MNIST's committed k-means patch tokenizer (``data/demo/tokenizer.npz``: 4x4 patches, 256 codes), kept
    for comparison (docs/tokenizers.md); the demo itself uses ``demo_vq_tokenizer()``."""
    return default_data_root() / "demo" / "tokenizer.npz"


def demo_vq_tokenizer() -> Path:
    """The demo's tokenizer: a VQ autoencoder trained by the framework on MNIST (experiments/tokenizers/mnist.yaml),
    committed as ``data/demo/tokenizer_vq.pt`` (8x8 tokens, 64 codes). The alias ``demo`` names it."""
    return default_data_root() / "demo" / "tokenizer_vq.pt"


class DemoTokenizer:
    """Grey patch VQ. ``centroids``: (K, p*p) float32 grey levels in [0, 1]."""

    kind = "demo"

    def __init__(self, centroids: torch.Tensor, patch: int, image_size: int) -> None:
        if centroids.ndim != 2 or centroids.shape[1] != patch * patch:
            raise InvalidInput(f"centroids must be (K, {patch * patch}) for patch {patch}, got {tuple(centroids.shape)}")
        if image_size % patch:
            raise InvalidInput(f"image_size {image_size} is not a multiple of patch {patch}")
        self.centroids = centroids.float()  # (K, p*p)
        self.patch = patch
        self.image_size = image_size

    @property
    def codebook_size(self) -> int:
        return self.centroids.shape[0]

    @property
    def downsample(self) -> int:
        return self.patch

    @property
    def latent_side(self) -> int:
        return self.image_size // self.patch

    @property
    def token_shape(self) -> tuple[int, int]:
        return (self.latent_side, self.latent_side)

    @classmethod
    def from_config(cls, path: str | None = None) -> "DemoTokenizer":
        """The registry constructor: the .npz at ``path`` (default: data/demo/tokenizer.npz)."""
        return cls.load(path if path is not None else default_demo_tokenizer())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> ids int64 (B, H/p, W/p)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InvalidInput(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        b, _, hh, ww = images.shape
        p = self.patch
        if hh % p or ww % p:
            raise InvalidInput(f"image size {hh}x{ww} is not a multiple of the patch size {p}")
        grey = images.float().mean(1)  # (B, H, W): the demo data is grey, colour is averaged away
        patches = grey.reshape(b, hh // p, p, ww // p, p).permute(0, 1, 3, 2, 4).reshape(-1, p * p)  # (B*h*w, p*p)
        c = self.centroids.to(patches.device)
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is constant per row, so it cannot change the argmin
        dist = c.pow(2).sum(1)[None] - 2 * patches @ c.T  # (B*h*w, K)
        return dist.argmin(1).reshape(b, hh // p, ww // p)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> fp32 images in [0, 1], (B, 3, h*p, w*p), grey replicated to RGB."""
        if ids.ndim != 3:
            raise InvalidInput(f"expected ids (B, h, w), got {tuple(ids.shape)}")
        b, h, w = ids.shape
        p = self.patch
        if int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size:
            raise InvalidInput(f"token ids must be in [0, {self.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]")
        patches = self.centroids.to(ids.device)[ids.long()]  # (B, h, w, p*p)
        grey = patches.reshape(b, h, w, p, p).permute(0, 1, 3, 2, 4).reshape(b, 1, h * p, w * p)  # (B, 1, H, W)
        return grey.expand(b, 3, h * p, w * p).clamp(0, 1).contiguous()

    def weights_hash(self) -> str:
        return hashlib.sha256(self.centroids.numpy().astype("<f4").tobytes()).hexdigest()

    def identity(self) -> dict:
        return {"kind": self.kind,
                "config": {"codebook_size": self.codebook_size, "patch": self.patch, "image_size": self.image_size},
                "weights_sha256": self.weights_hash()}

    # ---- file I/O: a .npz with the centroids and the two ints, no pickle ----

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        buf = io.BytesIO()
        np.savez(buf, centroids=self.centroids.numpy().astype(np.float32), patch=np.int64(self.patch),
                 image_size=np.int64(self.image_size))
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DemoTokenizer":
        path = Path(path)
        if not path.is_file():
            raise MissingInput(f"demo tokenizer file {path} not found (build it: enat tokenize demo, or make demo)")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(torch.from_numpy(z["centroids"].astype(np.float32)), int(z["patch"]),
                           int(z["image_size"]))
        except (KeyError, ValueError, OSError) as e:
            raise InvalidInput(f"{path} is not a demo tokenizer file ({e})") from e
