"""`enat tokenizer evaluate`: measure a tokenizer as tokenizer papers report it; `enat tokenizer export`: the
slim file of a trained tokenizer."""
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


def export(ckpt: Path, out: Path, overwrite: bool = False) -> dict:
    """Write the slim file of a tokenizer trained with `enat fit`: weights + architecture, no optimizer state
    or discriminator; `--tokenizer FILE` reads it like the checkpoint (same identity, same codes).

    Args:
        ckpt: a checkpoint of `enat fit` on a tokenizer config (e.g. runs/tokenizers/mnist/checkpoints/last.ckpt)
        out: the tokenizer file to write (.pt, .pth or .ckpt, so `--tokenizer FILE` recognises it)
        overwrite: replace an existing --out that is not an export of these same weights
    """
    from enat_lightning.commands.common import writing
    from enat_lightning.errors import MissingInput, UserError
    from enat_lightning.fileio import claim_output
    from enat_lightning.tokenizers import CHECKPOINT_SUFFIXES, load_tokenizer, normalize_spec
    from enat_lightning.tokenizers.autoencoder import CLASS_PATH, save_tokenizer

    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.is_file():
        raise MissingInput(f"--ckpt {ckpt} does not exist (train a tokenizer: enat fit -c experiments/tokenizers/mnist.yaml)")
    if out.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(f"--out {out}: give a {'/'.join(CHECKPOINT_SUFFIXES)} file name, so `--tokenizer {out.name}` "
                        f"is read as a tokenizer file")
    if out.resolve() == ckpt.resolve():
        raise UserError(f"--out {out} is the --ckpt itself: write the slim file beside it")
    if normalize_spec(str(ckpt))["class_path"] != CLASS_PATH:
        raise UserError(f"--ckpt {ckpt} is not a tokenizer checkpoint of `enat fit` (no tokenizer record); "
                        f"only trained tokenizers are exported this way")
    tok = load_tokenizer(str(ckpt))
    weights = tok.identity()["weights_sha256"]

    def same_weights(path: Path) -> bool:  # a rerun: an earlier export of the same weights may be replaced
        try:
            return load_tokenizer(str(path)).identity()["weights_sha256"] == weights
        except Exception:  # noqa: BLE001 - anything else in --out is not ours
            return False

    with claim_output(out, overwrite=overwrite, is_ours=same_weights), writing(out):
        save_tokenizer(tok, out)
    mb = lambda p: p.stat().st_size / 2 ** 20  # noqa: E731
    print(f"exported tokenizer {ckpt} ({mb(ckpt):.1f} MB) -> {out} ({mb(out):.1f} MB; {tok.codebook_size} codes, "
          f"tokens {'x'.join(map(str, tok.token_shape))}); use it as --tokenizer {out}")
    return {"out": str(out), "weights_sha256": weights, "codebook_size": tok.codebook_size,
            "bytes": out.stat().st_size, "ckpt_bytes": ckpt.stat().st_size}
