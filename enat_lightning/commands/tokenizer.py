"""`enat tokenizer evaluate`: measure a tokenizer as tokenizer papers report it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def evaluate(tokenizer: str, images: Optional[str] = None, shards: Optional[str] = None,
             feature: Optional[str] = "inception", resolution: int = 256, limit: Optional[int] = None,
             batch_size: int = 100, device: str = "cpu", out: Optional[Path] = None, overwrite: bool = False,
             grid: Optional[Path] = None) -> dict:
    """Reconstruction rFID, PSNR, SSIM and codebook usage / perplexity of a tokenizer.

    Args:
        tokenizer: the tokenizer: {class_path: ..., init_args: {...}} (JSON/YAML text) or an alias ('demo', PATH.ckpt, PATH.npz)
        images: 'demo' / 'demo:digits' (the demo's held-out digits, the demo's rFID protocol) or a folder of images (searched recursively, ADM centre crop to --resolution)
        shards: instead of --images: a token shard set; only codebook usage / perplexity of its ids
        feature: rFID feature network: 'inception' (offline, [eval] extra), 'inception:PATH', 'demo' (demo classifier); null = no rFID
        resolution: with an image folder: the crop size
        limit: at most this many images
        batch_size: images per encode / decode call
        device: cpu, cuda, ...
        out: also write the results as JSON here
        overwrite: replace an existing --out
        grid: also save a PNG of the first 30 images, rows of inputs above rows of their reconstructions
    """
    import json

    import torch

    from enat_lightning.commands.common import check_device, check_output_file, load_features, writing
    from enat_lightning.errors import UserError
    from enat_lightning.evaluation.tokenizer import measure_reconstructions, shard_codebook_stats
    from enat_lightning.fileio import atomic_write_text
    from enat_lightning.tokenizers import load_tokenizer, spec_text

    if (images is None) == (shards is None):
        raise UserError("give exactly one of --images (demo, demo:digits or a folder) and --shards DIR")
    check_device(device)
    check_output_file(out, overwrite=overwrite)
    tok = load_tokenizer(tokenizer)
    if shards is not None:
        res = shard_codebook_stats(shards, tok.codebook_size)
    else:
        if str(images).startswith("demo"):
            from enat_lightning.demo.data import load_images

            x, _, is_val = load_images(str(images).partition(":")[2] or "mnist")
            x = x[is_val]
        else:
            from enat_lightning.data.images import image_files
            from enat_lightning.data.tokenize import load_image

            x = torch.stack([load_image(p, resolution) for p in image_files(images)[:limit]])
        x = x[:limit]
        if hasattr(tok, "to"):
            tok = tok.to(device)
        extractor = load_features(feature, device) if feature else None
        res = measure_reconstructions(tok, (x[i:i + batch_size] for i in range(0, len(x), batch_size)), extractor)
        if grid is not None:
            from enat_lightning.evaluation.tokenizer import reconstruction_grid
            from enat_lightning.sampling.io import save_png

            pick = torch.linspace(0, len(x) - 1, min(30, len(x))).long()  # spread over the classes
            with writing(grid):
                res["grid"] = str(save_png(grid, reconstruction_grid(tok, x[pick].to(device))))
    res = {"tokenizer": spec_text(tokenizer), "source": str(images or shards), **res}
    print(json.dumps(res, indent=2, default=str))
    if out is not None:
        with writing(out):
            atomic_write_text(out, json.dumps(res, indent=2, default=str))
    return res
