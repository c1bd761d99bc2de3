"""Measure any tokenizer as tokenizer papers report it: rFID, PSNR, SSIM, codebook usage / perplexity.

Reconstructions ``decode(encode(x))`` of a set of images are compared with the images themselves:
rFID with torchmetrics' ``FrechetInceptionDistance`` over a project feature network (the offline
Inception: 'inception'; the demo classifier: 'demo' -- the same protocol as the demo's "tokenizer
reconstructions" row, enat_lightning/demo/pipeline.py), PSNR and SSIM on [0, 1] images (torchmetrics),
and the usage / perplexity of the ids over the whole set. On a token shard set (no source images) only the
codebook statistics of the stored ids are defined.
"""
from __future__ import annotations

import time
from typing import Iterable

import torch


def _codebook_stats(counts: torch.Tensor) -> dict:
    counts = counts.double()
    p = counts[counts > 0] / counts.sum()
    return {"codebook_usage": float((counts > 0).double().mean()), "used_codes": int((counts > 0).sum()),
            "perplexity": float((-(p * p.log()).sum()).exp()) if len(p) else 0.0}


class _Features(torch.nn.Module):
    def __init__(self, extractor):
        super().__init__()
        self.extractor, self.num_features = extractor, extractor.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images).features


def measure_reconstructions(tokenizer, batches: Iterable[torch.Tensor], extractor=None) -> dict:
    """batches of images (B, 3, H, W) in [0, 1] -> rFID (if ``extractor``), PSNR, SSIM, usage, perplexity,
    seconds per image of encode + decode."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    from .features import to_uint8

    psnr, ssim = PeakSignalNoiseRatio(data_range=1.0), StructuralSimilarityIndexMeasure(data_range=1.0)
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    fid = None
    if extractor is not None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=_Features(extractor))
    n, seconds = 0, 0.0
    for x in batches:
        x = x.float()
        t = time.perf_counter()
        with torch.no_grad():
            ids = tokenizer.encode(x)
            recon = tokenizer.decode(ids).float().cpu().clamp(0, 1)
        seconds += time.perf_counter() - t
        counts += torch.bincount(ids.flatten().cpu().long(), minlength=tokenizer.codebook_size)
        psnr.update(recon, x)
        ssim.update(recon, x)
        if fid is not None:
            fid.update(to_uint8(x), real=True)
            fid.update(to_uint8(recon), real=False)
        n += len(x)
    if n == 0:
        raise ValueError("no images to measure the tokenizer on")
    out = {"images": n, "psnr": float(psnr.compute()), "ssim": float(ssim.compute()),
           **_codebook_stats(counts), "codebook_size": tokenizer.codebook_size,
           "ms_per_image": 1e3 * seconds / n}
    if fid is not None:
        out["rfid"] = float(fid.compute())
        out["feature"] = getattr(extractor, "name", str(extractor))
    return out


def shard_codebook_stats(spec: str, codebook_size: int | None = None) -> dict:
    """Usage / perplexity of the ids stored in a token shard set (directory with manifest.json)."""
    import numpy as np

    from enat_lightning.data.reader import iter_shard, resolve_manifest

    manifest, urls, _ = resolve_manifest(str(spec))
    size = codebook_size or manifest.codebook_size
    counts = torch.zeros(size, dtype=torch.long)
    n = 0
    for url, info in zip(urls, manifest.shards):
        for _, sample in iter_shard(url, manifest, expected=info.samples):
            counts += torch.bincount(torch.from_numpy(np.asarray(sample.tokens).astype(np.int64)).flatten(),
                                     minlength=size)[:size]
            n += 1
    return {"samples": n, **_codebook_stats(counts), "codebook_size": size, "tokenizer": manifest.tokenizer}


def reconstruction_grid(tokenizer, images: torch.Tensor, per_row: int = 10, upscale: int = 2):
    """uint8 (H, W, 3) grid: pairs of rows, the inputs above their reconstructions."""
    import numpy as np

    from enat_lightning.sampling.io import make_grid, to_uint8

    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(images.float())).float().cpu()
    rows = []
    for i in range(0, len(images), per_row):
        rows += [images[i:i + per_row].float(), recon[i:i + per_row]]
    grid = make_grid(to_uint8(torch.cat(rows)), nrow=per_row, fill=128)
    return np.ascontiguousarray(grid.repeat(upscale, axis=0).repeat(upscale, axis=1))
