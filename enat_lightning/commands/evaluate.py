"""`enat evaluate`: FID / IS (/ demo accuracy) of a checkpoint's samples or of a samples.npz."""
from __future__ import annotations

import json
from pathlib import Path

from .sampler_flags import add_sampler_arguments, sampler_from_args

HELP = "FID / IS of a checkpoint (generating N samples) or of an existing samples.npz against reference stats"


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", type=Path, help="a training / generator checkpoint (EMA weights are used)")
    src.add_argument("--samples", type=Path, help="score an existing samples.npz (arr_0 uint8 (N,H,W,3), labels)")
    p.add_argument("--ref", type=Path, default=None, help="reference statistics .npz (mu, sigma); omit for IS only")
    p.add_argument("--inception", type=Path, default=None, metavar="PATH",
                   help="Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--feature", default=None, help="'demo', 'demo:PATH' or 'inception:PATH' (instead of --inception)")
    p.add_argument("--tokenizer", default=None,
                   help="with --ckpt: 'demo', 'demo:PATH' or a VQGAN checkpoint (to decode tokens to pixels)")
    p.add_argument("--num-samples", type=int, default=50000)
    p.add_argument("--prompts-from", default=None, metavar="SHARDS",
                   help="text models (FID-30K): `enat tokenize coco` shards of val2014; one caption (drawn with "
                        "--seed) per image of the first --num-samples images")
    p.add_argument("--per-class-balanced", action="store_true",
                   help="label of sample i = i mod num_classes (ADM / U-ViT protocol; else uniform random labels)")
    add_sampler_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--save-samples", type=Path, default=None, help="also write the generated samples.npz")
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here (atomically)")


def run(args) -> int:
    from enat_lightning.evaluation.frechet import load_stats
    from enat_lightning.commands.fid_stats import feature_spec
    from enat_lightning.evaluation import evaluate, load_feature_extractor, load_samples, score_images
    from enat_lightning.fileio import atomic_write_text, sha256_file

    extractor = load_feature_extractor(feature_spec(args, None), device=args.device)
    ref = load_stats(args.ref) if args.ref is not None else None
    if args.samples is not None:
        images, labels = load_samples(args.samples)
        res = score_images(images, labels, extractor, ref, is_splits=args.is_splits)
        res["samples"] = {"path": str(args.samples), "sha256": sha256_file(args.samples)}
    else:
        if args.tokenizer is None:
            raise ValueError("--ckpt needs --tokenizer to decode tokens into images ('demo' or a VQGAN checkpoint)")
        from enat_lightning.data.tokenize import resolve_tokenizer
        from enat_lightning.sampling.checkpoint import load_generator

        model, _ = load_generator(args.ckpt, device=args.device)
        conditions = None
        if args.prompts_from is not None:  # text-to-image: sample i is conditioned on caption i
            from enat_lightning.data.coco import eval_captions

            conditions = eval_captions(model, args.prompts_from, args.num_samples, seed=args.seed)
        elif model.cfg.condition == "text":
            raise ValueError(f"{args.ckpt} is a text model: give --prompts-from SHARDS (captions to sample)")
        tokenizer = resolve_tokenizer(args.tokenizer)
        if hasattr(tokenizer, "to"):
            tokenizer = tokenizer.to(args.device)
        settings = sampler_from_args(args)
        res = evaluate(model, tokenizer, extractor, num_samples=args.num_samples, ref=ref, settings=settings,
                       per_class_balanced=args.per_class_balanced, seed=args.seed, batch_size=args.batch_size,
                       is_splits=args.is_splits, return_samples=args.save_samples is not None,
                       conditions=conditions)
        if args.prompts_from is not None:
            res["prompts_from"] = str(args.prompts_from)
        images, labels = res.pop("images", None), res.pop("labels", None)
        res["ckpt"] = {"path": str(args.ckpt), "sha256": sha256_file(args.ckpt)}
        res["tokenizer"] = args.tokenizer
        if args.save_samples is not None:
            from enat_lightning.sampling.io import save_npz

            save_npz(args.save_samples, arr_0=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
            res["samples"] = {"path": str(args.save_samples)}
    if ref is not None:
        res["ref"] = {"path": str(args.ref), "sha256": sha256_file(args.ref), "num_samples": ref.num_samples}
    text = json.dumps(res, indent=2)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    return 0
