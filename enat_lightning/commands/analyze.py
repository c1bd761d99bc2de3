"""`enat analyze similarity|attention-maps|attention`: the paper's temporal (Fig. 5) and spatial
(Fig. 2) interaction analyses on a checkpoint."""
from __future__ import annotations

from .sampler_flags import add_sampler_arguments, sampler_from_args

HELP = "interaction analyses: feature similarity across steps (Fig. 5), attention maps and cuts (Fig. 2)"


def _sampler_args(p) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint from training or `enat import-official` (EMA weights)")
    p.add_argument("--num-samples", type=int, default=16, help="samples to generate (classes cycled)")
    p.add_argument("--labels", help="comma-separated class ids to cycle through (default: all classes)")
    p.add_argument("--prompts", help="text models: a file with one caption per line, cycled (needs --text-encoder)")
    p.add_argument("--text-encoder", help="with --prompts: the encoder of the training shards, 'clip:DIR' or "
                                          "'hash[:dim=..,length=..]'")
    add_sampler_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="samples per sampler call (bounds memory)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tensorboard", help="also log figures and scalars to this TensorBoard log dir")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    s = sub.add_parser("similarity", help="token-wise cosine similarity of adjacent steps' features (Fig. 5)")
    _sampler_args(s)
    s.add_argument("--layer", choices=("final", "all"), default="final",
                   help="final features only, or every block's output too")
    s.add_argument("--show-samples", type=int, default=2, help="samples drawn in the similarity-map figure")
    m = sub.add_parser("attention-maps", help="attention mass of [MASK] queries on visible vs [MASK] keys per "
                                              "block and step")
    _sampler_args(m)
    a = sub.add_parser("attention", help="a trained NAT with one attention interaction cut at inference time "
                                         "(Fig. 2): masked-token loss change and sample quality")
    a.add_argument("--ckpt", required=True, help="NAT checkpoint (arch 'nat')")
    a.add_argument("--remove", default="all",
                   help="all | comma-separated of mask_to_visible, visible_to_mask, visible_to_visible, mask_to_mask")
    a.add_argument("--data", help="validation token shards (default: the demo val split when the model fits it)")
    a.add_argument("--limit", type=int, help="use only the first N validation samples")
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--mask-ratio-beta", type=float, nargs=2, default=(12.0, 3.0), metavar=("A", "B"),
                   help="Beta(a, b) of the validation mask ratio (training recipe default 12 3)")
    a.add_argument("--metric", default="none", choices=("none", "demo-fid", "fid"),
                   help="also sample each cut variant and score it (demo-fid: demo classifier; fid: Inception, "
                        "needs --fid-stats and --tokenizer)")
    a.add_argument("--num-samples", type=int, default=500, help="samples per variant for --metric")
    a.add_argument("--fid-stats", help="reference statistics .npz (`enat fid-stats`), for --metric fid")
    a.add_argument("--tokenizer", help="tokenizer spec for --metric fid (VQGAN checkpoint or JSON spec)")
    a.add_argument("--inception", help="Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth), "
                                       "for --metric fid")
    add_sampler_arguments(a)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="cpu")
    a.add_argument("--out", required=True, help="output folder (attention_removal.csv / .md)")


def _labels(text):
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"--labels must be comma-separated integers, got {text!r}") from e


def _captions(args):
    """--prompts through --text-encoder -> Captions (text models), else None."""
    if not getattr(args, "prompts", None):
        return None
    from enat_lightning.text import build_text_encoder, encode_prompts, read_prompts

    if not args.text_encoder:
        raise ValueError("--prompts needs --text-encoder (the encoder the training shards were made with)")
    return encode_prompts(read_prompts(args.prompts), build_text_encoder(args.text_encoder))


def _writer(args):
    if not getattr(args, "tensorboard", None):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(args.tensorboard)


def run(args) -> int:
    if args.analysis == "similarity":
        from enat_lightning.analysis.similarity import GROUPS, analyze_similarity

        writer = _writer(args)
        try:
            res, paths = analyze_similarity(args.ckpt, args.out, sampler_from_args(args), num_samples=args.num_samples,
                                            labels=_labels(args.labels), layers=args.layer,
                                            show_samples=args.show_samples, seed=args.seed, device=args.device,
                                            batch_size=args.batch_size, logger=writer, captions=_captions(args))
        finally:
            if writer is not None:
                writer.close()
        final = res.layers.index("final")
        print("mean similarity of adjacent steps (final features):")
        print("pair    " + "  ".join(f"{g:>18}" for g in GROUPS))
        for p in range(res.num_pairs):
            print(f"{p + 1}->{p + 2:<4}" + "  ".join(f"{float(res.means[final, p, g]):18.4f}" for g in range(3)))
        print("wrote " + ", ".join(str(v) for v in paths.values()))
        return 0
    if args.analysis == "attention-maps":
        from enat_lightning.analysis.attention import analyze_attention_maps

        writer = _writer(args)
        try:
            res, paths = analyze_attention_maps(args.ckpt, args.out, sampler_from_args(args), num_samples=args.num_samples,
                                                labels=_labels(args.labels), seed=args.seed, device=args.device,
                                                batch_size=args.batch_size, logger=writer, captions=_captions(args))
        finally:
            if writer is not None:
                writer.close()
        mv = res.masses["mask_to_visible"]
        print("[MASK] -> visible attention mass (blocks x steps):")
        for li, layer in enumerate(res.layers):
            print(f"{layer:>8} " + " ".join("   -  " if v != v else f"{v:6.3f}" for v in mv[li].tolist()))
        print("wrote " + ", ".join(str(v) for v in paths.values()))
        return 0
    if args.analysis == "attention":
        from enat_lightning.analysis.attention import analyze_attention_removal, markdown_table, removal_list

        removals = removal_list(args.remove)
        metric = None
        if args.metric != "none":
            from enat_lightning.studies.study import sample_quality_metric

            metric = sample_quality_metric(args.metric, sampler_from_args(args), num_samples=args.num_samples,
                                           seed=args.seed, fid_stats=args.fid_stats,
                                           tokenizer=args.tokenizer, feature=args.inception, device=args.device)
        rows = analyze_attention_removal(args.ckpt, args.out, removals=removals, data=args.data, limit=args.limit,
                                         batch_size=args.batch_size, seed=args.seed,
                                         mask_ratio_beta=tuple(args.mask_ratio_beta), sample_metric=metric,
                                         device=args.device)
        print(markdown_table(rows), end="")
        print(f"wrote {args.out}/attention_removal.csv and attention_removal.md")
        return 0
    raise ValueError(f"unknown analysis {args.analysis!r}")
