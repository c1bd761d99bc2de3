"""`enat fid-stats`: a reference batch of real data in the ADM layout (mu/sigma, mu_s/sigma_s, arr_0)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional


def fid_stats(out: Path, images: Optional[Path] = None, shards: Optional[str] = None, demo: bool = False,
              feature: Optional[str] = None, inception: Optional[Path] = None, tokenizer: Optional[str] = None,
              resolution: int = 256, split: Literal["train", "val", "all"] = "train", limit: Optional[int] = None,
              batch_size: int = 100, device: str = "cpu", ref_images: int = 10000,
              overwrite: bool = False) -> dict:
    """Compute a reference batch (ADM layout: mu, sigma, mu_s, sigma_s, arr_0) from images, token shards or the
    demo digits.

    Args:
        out: output .npz (keys mu, sigma; mu_s, sigma_s with the Inception-v3; arr_0: the first --ref_images
            images, uint8 (N, H, W, 3); num_samples, feature, feature_s)
        images: a folder of images (searched recursively)
        shards: token shards (directory with manifest.json), decoded with --tokenizer
        demo: the demo's MNIST digits (feature network: the demo classifier unless --feature)
        feature: feature network: 'demo', 'demo:PATH' or 'inception:PATH' (default: demo with --demo)
        inception: shorthand for --feature inception:PATH (pt_inception-2015-12-05-6726825d.pth)
        tokenizer: with --shards: 'demo', 'demo:PATH' or a VQGAN checkpoint
        resolution: with --images: ADM centre-crop size
        split: with --demo: which digits
        limit: use at most this many images
        batch_size: images per feature-network call
        device: cpu, cuda, cuda:1 ...
        overwrite: replace an existing --out that is not FID statistics (a rerun replaces its own statistics)
        ref_images: reference images kept as arr_0 for precision / recall (ADM: 10000; 0: statistics only)
    """
    from enat_lightning.commands.common import check_device, feature_spec
    from enat_lightning.errors import UserError
    from enat_lightning.fileio import claim_output

    if sum(x is not None and x is not False for x in (images, shards, demo or None)) != 1:
        raise UserError("give exactly one source: --images DIR, --shards DIR or --demo")
    if ref_images < 0:
        raise UserError(f"--ref_images must be >= 0, got {ref_images}")
    check_device(device)
    spec = feature_spec(inception, feature, "demo" if demo else None)
    source = f"demo MNIST digits ({split})" if demo else str(images if images is not None else shards)

    with claim_output(out, overwrite=overwrite, is_ours=is_fid_stats):  # before minutes of feature extraction
        return _compute(out, images, shards, demo, spec, tokenizer, resolution, split, limit, batch_size, device,
                        source, ref_images)


def is_fid_stats(path: Path) -> bool:
    """Whether ``path`` is a statistics file this command wrote (an .npz with mu, sigma and feature)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {"mu", "sigma", "feature"} <= set(z.files)
    except Exception:  # noqa: BLE001 - anything else (a checkpoint, an image, garbage) is not ours
        return False


def _compute(out, images, shards, demo, spec, tokenizer, resolution, split, limit, batch_size, device, source,
             ref_images):
    import json

    from enat_lightning.commands.common import load_features
    from enat_lightning.errors import UserError
    from enat_lightning.evaluation.reference import stats_from_folder, stats_from_shards
    from enat_lightning.evaluation.reference_batch import load_reference_spec, save_reference_batch
    from enat_lightning.fileio import sha256_file

    extractor = load_features(spec, device)
    if demo:
        batch = load_reference_spec(f"demo:{split}", extractor)
        if limit is not None or ref_images < batch.num_images:
            from enat_lightning.evaluation.reference import reference_stats

            real = batch.images[:limit].float() / 255  # uint8 -> [0, 1]: to_uint8 gives the same bytes back
            batch = reference_stats(real, extractor, ref_images=ref_images)
    elif images is not None:
        batch = stats_from_folder(images, extractor, resolution, batch_size=batch_size, limit=limit,
                                  ref_images=ref_images)
    else:
        if tokenizer is None:
            raise UserError("--shards needs --tokenizer ('demo', 'demo:PATH' or a VQGAN checkpoint)")
        from enat_lightning.tokenizers import load_tokenizer

        batch = stats_from_shards(shards, load_tokenizer(tokenizer), extractor, batch_size=batch_size, limit=limit,
                                  ref_images=ref_images)
    path = save_reference_batch(out, batch)
    stats = batch.pool
    info = {"out": str(path), "sha256": sha256_file(path), "num_samples": stats.num_samples,
            "feature": stats.feature, "source": source, "spatial": batch.spatial is not None,
            "ref_images": batch.num_images}
    print(json.dumps(info, indent=2))
    return info
