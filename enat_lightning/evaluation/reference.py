"""Reference statistics (``mu``, ``sigma``) of real data under a feature network.

Sources: a folder of images (ADM centre crop to the evaluation resolution, as the ADM reference
batches were made), token shards decoded with their tokenizer (the tokenizer's reconstruction
ceiling: what a perfect generator of those tokens would score), or in-memory images (the demo digits).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from enat_lightning.evaluation.frechet import FeatureStats, stats_from_features

from .evaluate import extract
from .features import FeatureExtractor, to_uint8
from enat_lightning.errors import InvalidInput, MissingInput


def _stats(chunks, extractor: FeatureExtractor, limit: int | None, ref_images: int | None = None):
    if ref_images is not None:  # the ADM reference batch: + spatial statistics and the first images
        from .reference_batch import batch_from_chunks

        return batch_from_chunks(chunks, extractor, limit, ref_images)
    feats, n = [], 0
    for images in chunks:  # uint8 (b, 3, H, W)
        if limit is not None:
            images = images[: limit - n]
        feats.append(extract(extractor, images)[0])
        n += images.shape[0]
        if limit is not None and n >= limit:
            break
    if not feats:
        raise InvalidInput("no images to compute statistics from")
    return stats_from_features(torch.cat(feats), extractor.name)


def stats_from_folder(root: str | os.PathLike, extractor: FeatureExtractor, resolution: int, *,
                      batch_size: int = 100, limit: int | None = None, ref_images: int | None = None):
    """Every image under ``root`` (recursively, sorted), ADM centre-cropped to ``resolution``.
    ``ref_images``: return a ``ReferenceBatch`` (ADM layout) keeping that many images, else ``FeatureStats``."""
    from enat_lightning.data.tokenize import IMG_EXTENSIONS, load_image

    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"image folder {root} does not exist")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise MissingInput(f"no images with extensions {IMG_EXTENSIONS} under {root}")

    def chunks():
        for i in range(0, len(files), batch_size):
            yield to_uint8(torch.stack([load_image(f, resolution) for f in files[i:i + batch_size]]))

    return _stats(chunks(), extractor, limit, ref_images)


def stats_from_shards(spec: str | os.PathLike, tokenizer, extractor: FeatureExtractor, *, batch_size: int = 100,
                      limit: int | None = None, ref_images: int | None = None):
    """Token shards (a directory with manifest.json) decoded by ``tokenizer`` (``ref_images``: as above)."""
    import numpy as np

    from enat_lightning.data.reader import iter_shard, resolve_manifest

    manifest, urls, where = resolve_manifest(str(spec))
    if manifest.codebook_size != tokenizer.codebook_size:
        raise InvalidInput(f"{where} was tokenized with a codebook of {manifest.codebook_size} codes, the given "
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

    return _stats(chunks(), extractor, limit, ref_images)


def reference_stats(images: torch.Tensor, extractor: FeatureExtractor, batch_size: int = 100,
                    ref_images: int | None = None):
    """Float images (N, 3, H, W) in [0, 1] (e.g. the demo's held-out digits) -> statistics
    (``ref_images``: a ``ReferenceBatch`` keeping that many images)."""
    return _stats((to_uint8(images[i:i + batch_size]) for i in range(0, len(images), batch_size)), extractor, None,
                  ref_images)


# spec prefix -> fn(rest of spec, extractor) -> FeatureStats. The demo registers its digits here when
# enat_lightning.demo.classifier is imported, so that ``ref_stats: demo:val`` works in a config
# without this package importing enat_lightning.demo
REFERENCES: dict = {}


def register_reference(name: str, fn) -> None:
    """Make ``name:REST`` reference specs call ``fn(REST, extractor)``."""
    REFERENCES[name] = fn


def load_reference(spec: str, extractor: FeatureExtractor) -> FeatureStats:
    """``demo:SPLIT`` / ``demo:DATASET:SPLIT`` (the demo digits under ``extractor``) or a statistics .npz."""
    from enat_lightning.evaluation.frechet import load_stats

    head, _, rest = str(spec).partition(":")
    if head in REFERENCES and rest:
        return REFERENCES[head](rest, extractor)
    return load_stats(spec)
