"""Content-addressed cache of feature-network outputs for fixed image sets (FID reference sides).

The images an evaluation compares against (held-out digits, real training digits, a tokenizer's
reconstructions of them) do not change between runs, yet on a CPU their Inception-v3 passes cost
minutes. ``cached_features`` keys each set by what the features are a function of -- the feature
network's name (which pins its weights: ``extractors.INCEPTION_NAME``) and the sha256 of the exact
uint8 pixels fed to it -- and stores the features in ``cache_dir/<key>.npz`` (written atomically) as
float16: half the size of float32, and the demo's FIDs move by ~1e-4. The features are returned rounded
to float16 on the first call too, so a run that computes them and a run that reads them agree exactly.
Any change of pixels (another tokenizer, other digits, a different rounding of a decoder) is another
key, so a cached file is never used for images it was not made from; a file whose recorded key, network
or shape disagrees with its name is refused with an error naming it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from enat_lightning.errors import InvalidInput
from enat_lightning.fileio import atomic_writer

from .evaluate import extract


def images_key(feature_name: str, images: torch.Tensor) -> str:
    """sha256 over the feature network's name, the shape and the bytes of uint8 (N, 3, H, W) images."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise InvalidInput(f"cached_features takes uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    h = hashlib.sha256()
    h.update(feature_name.encode())
    h.update(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_features(extractor, images: torch.Tensor, cache_dir: str | Path, batch_size: int = 250,
                    log=print) -> torch.Tensor:
    """Features (N, F) of uint8 images (N, 3, H, W): read from ``cache_dir`` when this network has seen
    exactly these pixels before, else computed and stored there."""
    key = images_key(extractor.name, images)
    path = Path(cache_dir) / f"{extractor.name.split(':')[0]}-{key[:20]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("features", "key", "feature") if k not in z.files]
            if missing:
                raise InvalidInput(f"feature cache file {path} lacks {missing}; delete it to recompute")
            if str(z["key"]) != key or str(z["feature"]) != extractor.name or z["features"].shape[0] != len(images):
                raise InvalidInput(f"feature cache file {path} was made for other images or another network "
                                   f"(key {str(z['key'])[:20]}, network {z['feature']}, {z['features'].shape[0]} "
                                   f"images); delete it to recompute")
            return torch.from_numpy(z["features"].astype(np.float32))
    feats = extract(extractor, images, batch_size)[0].cpu().half()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, features=feats.numpy(), key=np.array(key), feature=np.array(extractor.name))
    log(f"[features] {len(images)} images through {extractor.name} -> {path}")
    return feats.float()
