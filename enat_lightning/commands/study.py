"""`enat study run|plan`: train and evaluate every row of a paper table, results beside the paper's."""
from __future__ import annotations

HELP = "run a study (Fig. 2, Tables 1/2/6): train each row, evaluate, write results.md/.csv with paper numbers"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="train (or reuse) and evaluate every row")
    pl = sub.add_parser("plan", help="print the rows and the `enat fit` command of each, without running")
    for q in (r, pl):
        q.add_argument("spec", help="study spec (experiments/studies/*.yaml) or an ablation YAML listed in one")
        q.add_argument("--override", action="append", default=[], metavar="YAML",
                       help="config composed after every row, e.g. experiments/studies/demo_tiny.yaml (repeatable)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="LightningCLI override applied last, e.g. trainer.max_steps=50 (repeatable)")
        q.add_argument("--rows", help="comma-separated row names to run (default: all)")
        q.add_argument("--out", help="study folder (default runs/studies/<name>); rerun to resume")
    r.add_argument("--metric", default="none", choices=("none", "demo-fid", "fid"),
                   help="sample-quality metric per row (masked-token loss and GFLOPs are always measured "
                        "where the spec lists them)")
    r.add_argument("--num-samples", type=int, default=None,
                   help="samples per row for --metric (default 1000; sampler zoo: the spec's)")
    r.add_argument("--fid-stats", help="reference statistics .npz for --metric fid")
    r.add_argument("--tokenizer", help="VQGAN checkpoint or JSON tokenizer spec for --metric fid")
    r.add_argument("--inception", help="Inception-v3 FID weights file for --metric fid")
    r.add_argument("--val-limit", type=int, help="use only the first N validation samples for the masked loss")
    r.add_argument("--retrain", action="store_true", help="train rows again even if final.ckpt exists")
    r.add_argument("--seed", type=int, default=0, help="sampling seed for --metric")
    r.add_argument("--device", default="cpu", help="device for evaluation (training follows the YAML trainer)")
    r.add_argument("--ckpt", help="sampler zoo specs (kind: sampler_zoo): the checkpoint to evaluate")


def _select(study, rows_arg):
    if not rows_arg:
        return study
    wanted = [w.strip() for w in rows_arg.split(",") if w.strip()]
    names = [r.name for r in study.rows]
    bad = [w for w in wanted if w not in names]
    if bad:
        raise ValueError(f"--rows {bad} not in study {study.path}; rows are {names}")
    study.rows = [r for r in study.rows if r.name in wanted]
    return study


def run(args) -> int:
    from pathlib import Path

    from enat_lightning.studies.sampler_zoo import is_zoo_spec

    if is_zoo_spec(args.spec):  # one checkpoint under many SamplerSettings, no training
        return _run_zoo(args)

    from enat_lightning.studies.study import run_study, sample_quality_metric, study_for_path

    from enat_lightning.studies.study import slug

    study = _select(study_for_path(args.spec), args.rows)
    out = Path(args.out) if args.out else Path("runs") / "studies" / study.name
    if args.action == "plan":
        print(f"{study.title} ({study.path}); metrics {study.metrics}")
        for row in study.rows:
            cfgs = " ".join(f"-c {c}" for c in [*study.base, *row.configs, *args.override])
            sets = f" + overrides {', '.join(args.set)}" if args.set else ""
            ckpt = out / slug(row.name) / "final.ckpt"
            state = "trained" if ckpt.is_file() else "to train"
            print(f"- {row.name}: enat fit {cfgs}{sets}   paper {row.paper}   checkpoint {ckpt} ({state})")
        return 0
    metric = None
    if args.metric != "none":
        # each row passes its own SamplerSettings (study/row `sampling`) to the metric
        metric = sample_quality_metric(args.metric, num_samples=args.num_samples or 1000, seed=args.seed,
                                       fid_stats=args.fid_stats, tokenizer=args.tokenizer, feature=args.inception,
                                       device=args.device)
    rows = run_study(study, out, overrides=[Path(o) for o in args.override], sets=args.set, sample_metric=metric,
                     val_limit=args.val_limit, retrain=args.retrain, device=args.device)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'} and {out / 'results.csv'} ({len(rows)} rows)")
    return 0


def _run_zoo(args) -> int:
    from pathlib import Path

    from enat_lightning.studies.sampler_zoo import load_zoo, run_zoo

    spec = load_zoo(args.spec)
    out = Path(args.out) if args.out else Path("runs") / "studies" / spec.name
    if args.action == "plan":
        for row in spec.rows:
            print(f"- {row.name}: {row.sampler.to_dict()}")
        return 0
    over = {"num_samples": args.num_samples} if args.num_samples else None
    run_zoo(spec, out, ckpt=args.ckpt, device=args.device, overrides=over)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'fid_vs_gflops.png'}")
    return 0
