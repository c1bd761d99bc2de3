"""ADM reference batches: pool and spatial statistics plus the reference images, one ``.npz``.

Layout (``guided-diffusion/evaluations``, e.g. ``VIRTUAL_imagenet256_labeled.npz``), read as published:

    mu (2048,), sigma (2048, 2048)      FID statistics of the whole reference set (pool3 features)
    mu_s (2023,), sigma_s (2023, 2023)  sFID statistics (mixed_6/conv, 7 channels, NHWC order)
    arr_0 uint8 (N, H, W, 3)            reference images (10 000 for ImageNet): precision / recall
                                        compare sample features with the features of these images

Files that ``enat fid-stats`` writes have the same keys, plus ``num_samples``, ``feature`` and
``feature_s`` (which networks made the statistics). A statistics-only file (``mu``/``sigma``, U-ViT,
pytorch-fid) is a reference batch without sFID and without precision/recall.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from enat_lightning.fileio import atomic_writer

from .frechet import FeatureStats, stats_from_features

ADM_IMAGES = 10_000  # reference images of an ADM batch (VIRTUAL_imagenet256_labeled.npz holds 10 000)


@dataclass
class ReferenceBatch:
    pool: FeatureStats  # mu / sigma
    spatial: FeatureStats | None = None  # mu_s / sigma_s
    images: torch.Tensor | None = None  # uint8 (R, 3, H, W) for precision / recall, or None
    path: Path | None = None
    _features: dict = field(default_factory=dict, repr=False)  # extractor name -> (R, F) pool features

    @property
    def num_images(self) -> int:
        return 0 if self.images is None else int(self.images.shape[0])

    def features(self, extractor, batch_size: int = 100) -> torch.Tensor | None:
        """Pool features (R, F) of the reference images under ``extractor`` (computed once, then cached)."""
        if self.images is None:
            return None
        if extractor.name not in self._features:
            from .spatial import extract_all

            self._features[extractor.name] = extract_all(extractor, self.images, batch_size, spatial=False).pool
        return self._features[extractor.name]


def _stats(z, mu: str, sigma: str, num: str, feat: str) -> FeatureStats:
    return FeatureStats(z[mu], z[sigma], num_samples=int(z[num]) if num in z.files else None,
                        feature=str(z[feat]) if feat in z.files else None)


def load_reference_batch(path: str | Path, images: bool = True) -> ReferenceBatch:
    """Reads an ADM reference batch (or a statistics-only file) as published; ``images=False`` skips arr_0."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference file {path} does not exist (make one with `enat fid-stats`, or use "
                                f"the ADM reference batch VIRTUAL_imagenet256_labeled.npz)")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("mu", "sigma") if k not in z.files]
        if missing:
            raise ValueError(f"{path} lacks key(s) {missing}; found {z.files}. Expected an ADM reference batch "
                             f"or statistics file with 'mu' (F,) and 'sigma' (F, F)")
        pool = _stats(z, "mu", "sigma", "num_samples", "feature")
        spatial = _stats(z, "mu_s", "sigma_s", "num_samples", "feature_s") if "mu_s" in z.files else None
        imgs = None
        if images and "arr_0" in z.files:
            arr = z["arr_0"]
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(f"{path}: 'arr_0' must be uint8 reference images (N, H, W, 3), got {arr.dtype} "
                                 f"{arr.shape}")
            imgs = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return ReferenceBatch(pool, spatial, imgs, path)


def save_reference_batch(path: str | Path, batch: ReferenceBatch) -> Path:
    """Writes the ADM layout (``mu``, ``sigma``, ``mu_s``, ``sigma_s``, ``arr_0``) + our provenance keys,
    atomically."""
    path = Path(path)
    arrays: dict = {"mu": batch.pool.mu, "sigma": batch.pool.sigma}
    if batch.spatial is not None:
        arrays.update(mu_s=batch.spatial.mu, sigma_s=batch.spatial.sigma)
        if batch.spatial.feature is not None:
            arrays["feature_s"] = np.array(batch.spatial.feature)
    if batch.images is not None:
        arrays["arr_0"] = batch.images.permute(0, 2, 3, 1).contiguous().numpy()  # (R, H, W, 3) as ADM stores
    if batch.pool.num_samples is not None:
        arrays["num_samples"] = np.int64(batch.pool.num_samples)
    if batch.pool.feature is not None:
        arrays["feature"] = np.array(batch.pool.feature)
    with atomic_writer(path) as tmp, open(tmp, "wb") as f:  # an open file: np.savez would add ".npz" to tmp
        np.savez(f, **arrays)
    return path


def batch_from_chunks(chunks, extractor, limit: int | None = None, ref_images: int = ADM_IMAGES,
                      batch_size: int = 100) -> ReferenceBatch:
    """uint8 chunks (b, 3, H, W) -> a reference batch: pool and (where the network has them) spatial
    statistics of all images (up to ``limit``), and the first ``ref_images`` images as ``arr_0``."""
    from .spatial import SPATIAL_NAME, extract_all

    pools, spats, kept, n = [], [], [], 0
    for images in chunks:
        if limit is not None:
            images = images[: limit - n]
        fs = extract_all(extractor, images, batch_size)
        pools.append(fs.pool)
        if fs.spatial is not None:
            spats.append(fs.spatial)
        if n < ref_images:
            kept.append(images[: ref_images - n])
        n += images.shape[0]
        if limit is not None and n >= limit:
            break
    if not pools:
        raise ValueError("no images to compute statistics from")
    spatial = stats_from_features(torch.cat(spats), SPATIAL_NAME) if spats else None
    images = torch.cat(kept) if kept and ref_images > 0 else None
    return ReferenceBatch(stats_from_features(torch.cat(pools), extractor.name), spatial, images)


# spec prefix -> function(rest of spec) -> float images (N, 3, H, W) in [0, 1]. Packages above register here
# (the demo: its digits, so that ``demo:val`` has images for precision / recall too); this package imports
# none of them.
REFERENCE_IMAGES: dict = {}


def register_reference_images(name: str, fn) -> None:
    """Make ``name:REST`` reference specs read their images with ``fn(REST)``."""
    REFERENCE_IMAGES[name] = fn


def load_reference_spec(spec: str, extractor, images: bool = True) -> ReferenceBatch:
    """``demo:SPLIT`` / ``demo:DATASET:SPLIT`` (the demo digits under ``extractor``, all kept as reference
    images) or a reference file (``load_reference_batch``)."""
    from .features import to_uint8

    head, _, rest = str(spec).partition(":")
    if head in REFERENCE_IMAGES and rest:
        real = REFERENCE_IMAGES[head](rest)  # (N, 3, H, W) float in [0, 1]
        chunks = (to_uint8(real[i:i + 100]) for i in range(0, len(real), 100))
        return batch_from_chunks(chunks, extractor, ref_images=len(real) if images else 0)
    return load_reference_batch(spec, images=images)
