"""The ADM metric set on the MNIST demo, and the CPU time of each metric per 1 000 images.

    PYTHONPATH=$PWD python benchmarks/eval_metrics.py --per-class 25 [--ckpt CKPT] --out runs/eval_metrics.json

Rows (the offline Inception-v3 of the [eval] extra; reference = the held-out digits, ``--per-class`` of
each class): real vs real (as many train digits), tokenizer reconstructions of the held-out digits vs
the digits, and with ``--ckpt`` the demo sampler's samples (the ``sampler:`` of experiments/demo.yaml, as
`make demo`). Timing: feature extraction (pool + spatial in one pass) per 1 000 images; FID, sFID
(covariance + Fréchet distance of 1 000 feature rows), precision/recall (1 000 vs 1 000), IS (1 000 x
1008 logits). Writes JSON; prints one line per row.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def per_class(labels: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([(labels == c).nonzero().flatten()[:n] for c in range(10)])


def main(argv=None) -> int:
    from enat_lightning.demo.data import load_mnist_images
    from enat_lightning.evaluation.evaluate import score_all
    from enat_lightning.evaluation.extractors import WheelInceptionFeatures
    from enat_lightning.evaluation.features import to_uint8
    from enat_lightning.evaluation.frechet import fid_from_stats, inception_score, stats_from_features
    from enat_lightning.evaluation.precision_recall import precision_recall
    from enat_lightning.evaluation.reference_batch import ReferenceBatch
    from enat_lightning.evaluation.spatial import SPATIAL_NAME, extract_all
    from enat_lightning.fileio import atomic_write_text
    from enat_lightning.demo.data import load_demo_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/eval_metrics.json"))
    args = ap.parse_args(argv)

    images, labels, is_val = load_mnist_images()
    val_idx = per_class(torch.where(is_val, labels, -1), args.per_class)
    train_idx = per_class(torch.where(~is_val, labels, -1), args.per_class)
    real = to_uint8(images[val_idx])
    net = WheelInceptionFeatures()
    report: dict = {"per_class": args.per_class, "threads": torch.get_num_threads(), "rows": {},
                    "load_average_at_start": os.getloadavg()[0]}
    t = time.perf_counter()
    ref_fs = extract_all(net, real)
    extract_s = time.perf_counter() - t
    ref = ReferenceBatch(stats_from_features(ref_fs.pool, net.name), stats_from_features(ref_fs.spatial, SPATIAL_NAME),
                         real)
    ref._features[net.name] = ref_fs.pool  # the same images: no second pass
    tokenizer = load_demo_tokenizer()
    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(images[val_idx])).clamp(0, 1)
    sets = {"real vs real (train digits)": to_uint8(images[train_idx]),
            "tokenizer reconstructions vs real": to_uint8(recon)}
    if args.ckpt is not None:
        from enat_lightning.evaluation import generate_images
        from enat_lightning.sampling.checkpoint import load_generator
        from enat_lightning.demo.pipeline import REPO_CONFIG, config_sampler

        model, _ = load_generator(args.ckpt)
        settings = config_sampler(REPO_CONFIG)
        lab = torch.arange(10 * args.per_class) % 10
        _, samples = generate_images(model, tokenizer, lab, settings, seed=0, batch_size=100)
        sets[f"samples of {args.ckpt} vs real"] = samples
    n_extracted = len(real)
    for name, imgs in sets.items():
        t = time.perf_counter()
        fs = extract_all(net, imgs)
        extract_s += time.perf_counter() - t
        n_extracted += len(imgs)
        res = score_all(fs.pool, fs.logits, fs.spatial, None, net, ref, metrics=("fid", "sfid", "precision", "recall"))
        report["rows"][name] = {k: res[k] for k in ("fid", "sfid", "precision", "recall")}
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in report["rows"][name].items()), flush=True)

    # time per 1 000 images of each metric (features of 1 000 images: the measured ones, repeated)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(ref_fs.pool), (1000,), generator=g)
    pool = ref_fs.pool[idx] + 1e-3 * torch.randn(1000, 2048, generator=g, dtype=torch.float64)
    spat = ref_fs.spatial[idx] + 1e-3 * torch.randn(1000, 2023, generator=g, dtype=torch.float64)

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    report["seconds_per_1000_images"] = {
        "inception features (pool + spatial, one pass)": 1000 * extract_s / n_extracted,
        "fid (covariance + Fréchet, 2048-d)": timed(lambda: fid_from_stats(stats_from_features(pool), ref.pool)),
        "sfid (covariance + Fréchet, 2023-d)": timed(lambda: fid_from_stats(stats_from_features(spat), ref.spatial)),
        "precision + recall (k=3, 1000 vs 1000)": timed(lambda: precision_recall(pool[:1000], pool.flip(0))),
        "is (1000 x 1008 logits, 10 splits)": timed(lambda: inception_score(torch.randn(1000, 1008, generator=g))),
    }
    report["load_average_at_end"] = os.getloadavg()[0]
    for k, v in report["seconds_per_1000_images"].items():
        print(f"{k}: {v:.2f} s / 1000 images")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
