"""Reference statistics (``mu``, ``sigma``) of real data under a feature network.

Sources: a folder of images (ADM centre crop to the evaluation resolution, as the ADM reference
batches were made), token shards decoded with their tokenizer (the tokenizer's reconstruction
ceiling: what a perfect generator of those tokens would score), or the demo digits.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from enat_lightning.evaluation.frechet import FeatureStats, stats_from_features

from .evaluate import extract
from .features import FeatureExtractor, to_uint8


def _stats(chunks, extractor: FeatureExtractor, limit: int | None) -> FeatureStats:
    feats, n = [], 0
    for images in chunks:  # uint8 (b, 3, H, W)
        if limit is not None:
            images = images[: limit - n]
        feats.append(extract(extractor, images)[0])
        n += images.shape[0]
        if limit is not None and n >= limit:
            break
    if not feats:
        raise ValueError("no images to compute statistics from")
    return stats_from_features(torch.cat(feats), extractor.name)


def stats_from_folder(root: str | os.PathLike, extractor: FeatureExtractor, resolution: int, *,
                      batch_size: int = 100, limit: int | None = None) -> FeatureStats:
    """Every image under ``root`` (recursively, sorted), ADM centre-cropped to ``resolution``."""
    from enat_lightning.data.tokenize import IMG_EXTENSIONS, load_image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no images with extensions {IMG_EXTENSIONS} under {root}")

    def chunks():
        for i in range(0, len(files), batch_size):
            yield to_uint8(torch.stack([load_image(f, resolution) for f in files[i:i + batch_size]]))

    return _stats(chunks(), extractor, limit)


def stats_from_shards(spec: str | os.PathLike, tokenizer, extractor: FeatureExtractor, *, batch_size: int = 100,
                      limit: int | None = None) -> FeatureStats:
    """Token shards (a directory with manifest.json) decoded by ``tokenizer``."""
    import numpy as np

    from enat_lightning.data.reader import iter_shard, resolve_manifest

    manifest, urls, where = resolve_manifest(str(spec))
    if manifest.codebook_size != tokenizer.codebook_size:
        raise ValueError(f"{where} was tokenized with a codebook of {manifest.codebook_size} codes, the given "
                         f"tokenizer has {tokenizer.codebook_size}")

    def chunks():
        buf = []
        for url, info in zip(urls, manifest.shards):
            for _, s in iter_shard(url, manifest, expected=info.samples):
                buf.append(np.asarray(s.tokens, dtype=np.int64))
                if len(buf) == batch_size:
                    yield _decode(buf)
                    buf = []
        if buf:
            yield _decode(buf)

    def _decode(buf):
        with torch.no_grad():
            return to_uint8(tokenizer.decode(torch.from_numpy(np.stack(buf))))

    return _stats(chunks(), extractor, limit)


def demo_reference_stats(extractor: FeatureExtractor, split: str = "train") -> FeatureStats:
    """The demo digits (``train``, ``val`` or ``all``) as 16x16 RGB images."""
    from enat_lightning.data.demo import load_digit_images

    images, _, is_val = load_digit_images()
    keep = {"train": ~is_val, "val": is_val, "all": torch.ones_like(is_val)}.get(split)
    if keep is None:
        raise ValueError(f"demo split must be 'train', 'val' or 'all', got {split!r}")
    return stats_from_features(extract(extractor, to_uint8(images[keep]))[0], extractor.name)
