"""`enat fid-stats`: reference statistics (mu, sigma) of real data for FID."""
from __future__ import annotations

import json
from pathlib import Path

HELP = "compute FID reference statistics (mu, sigma .npz) from images, token shards or the demo digits"


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="DIR", help="a folder of images (searched recursively)")
    src.add_argument("--shards", metavar="DIR", help="token shards (directory with manifest.json), decoded with --tokenizer")
    src.add_argument("--demo", action="store_true", help="the demo digits (feature network: the demo classifier)")
    p.add_argument("--out", type=Path, required=True, help="output .npz (keys mu, sigma, num_samples, feature)")
    p.add_argument("--feature", default=None,
                   help="feature network: 'demo', 'demo:PATH' or 'inception:PATH' (default: demo with --demo)")
    p.add_argument("--inception", type=Path, default=None, metavar="PATH",
                   help="shorthand for --feature inception:PATH (pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--tokenizer", default=None, help="with --shards: 'demo', 'demo:PATH' or a VQGAN checkpoint")
    p.add_argument("--resolution", type=int, default=256, help="with --images: ADM centre-crop size (default 256)")
    p.add_argument("--split", default="train", choices=("train", "val", "all"), help="with --demo (default train)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="cpu")


def feature_spec(args, default: str | None) -> str:
    if args.inception is not None and args.feature is not None:
        raise ValueError("give either --inception PATH or --feature, not both")
    if args.inception is not None:
        return f"inception:{args.inception}"
    if args.feature is not None:
        return args.feature
    if default is None:
        raise ValueError("choose the feature network: --inception PATH (ImageNet FID) or --feature demo")
    return default


def run(args) -> int:
    from enat_lightning.evaluation.frechet import save_stats
    from enat_lightning.evaluation import load_feature_extractor
    from enat_lightning.evaluation.reference import demo_reference_stats, stats_from_folder, stats_from_shards
    from enat_lightning.fileio import sha256_file

    extractor = load_feature_extractor(feature_spec(args, "demo" if args.demo else None), device=args.device)
    if args.demo:
        stats = demo_reference_stats(extractor, args.split)
        source = f"demo digits ({args.split})"
    elif args.images is not None:
        stats = stats_from_folder(args.images, extractor, args.resolution, batch_size=args.batch_size,
                                  limit=args.limit)
        source = str(args.images)
    else:
        if args.tokenizer is None:
            raise ValueError("--shards needs --tokenizer ('demo', 'demo:PATH' or a VQGAN checkpoint)")
        from enat_lightning.data.tokenize import resolve_tokenizer

        stats = stats_from_shards(args.shards, resolve_tokenizer(args.tokenizer), extractor,
                                  batch_size=args.batch_size, limit=args.limit)
        source = str(args.shards)
    path = save_stats(args.out, stats)
    print(json.dumps({"out": str(path), "sha256": sha256_file(path), "num_samples": stats.num_samples,
                      "feature": stats.feature, "source": source}, indent=2))
    return 0
