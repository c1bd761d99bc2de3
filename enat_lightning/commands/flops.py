"""`enat flops`: GMACs of one generation in the paper's convention (per step and total)."""
from __future__ import annotations

import json
from pathlib import Path

from .sampler_flags import add_sampler_arguments, sampler_from_args

HELP = "count the GMACs of one generation (paper convention: MACs, cond+uncond, all steps)"


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--config", action="append", type=Path, metavar="YAML",
                     help="training config(s) (LightningCLI YAML; repeat to compose): reads model.net")
    src.add_argument("--preset", help="a model preset (paper Table 7), e.g. enat-s, enat-l, nat-baseline")
    src.add_argument("--ckpt", type=Path, help="a checkpoint whose hparams hold the model config")
    p.add_argument("--resolution", type=int, default=None,
                   help="image side in pixels with --preset (latent grid = side/16; default: the preset's 256)")
    add_sampler_arguments(p, skip=("reuse",))
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument("--no-reuse", dest="reuse", action="store_false", default=None,
                       help="sample without computation reuse (Table 6a row 2)")
    reuse.add_argument("--reuse", dest="reuse", action="store_true",
                       help="force reuse (default: as the model was trained: Table 7 / model.reuse_prob > 0)")
    p.add_argument("--no-guidance", action="store_true", help="count the conditional pass only (= --cfg 0)")
    p.add_argument("--vq", default="maskgit-f16",
                   help="VQGAN preset whose decoder `tflops_paper` adds (default maskgit-f16; 'none' to drop)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    import dataclasses

    from enat_lightning.evaluation.flops import count_generation
    from enat_lightning.analysis.model_source import default_reuse, model_config_from_args

    cfg = model_config_from_args(args)
    reuse = default_reuse(args, cfg) if args.reuse is None else args.reuse
    settings = dataclasses.replace(sampler_from_args(args), reuse=reuse)
    if args.no_guidance:
        settings = dataclasses.replace(settings, cfg_scale=0.0)
    rep = count_generation(cfg, settings, vq=None if args.vq == "none" else args.vq)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    name = cfg.to_dict()["arch"]
    table = Table(title=f"{name} {cfg.grid}x{cfg.grid} tokens, {rep.steps} steps, "
                        f"reuse {'on' if reuse else 'off'} (GMACs per image)")
    for col in ("step", "masked in", "newly visible", "reuse", "cond G", "uncond G", "ours G"):
        table.add_column(col, justify="right")
    for s in rep.per_step:
        table.add_row(str(s.step), str(s.masked), str(s.new), "yes" if s.reused else "no",
                      f"{s.cond_gmacs:.2f}", f"{s.uncond_gmacs:.2f}", f"{s.actual_gmacs:.2f}")
    con = Console()
    con.print(table)
    print(f"gmacs_total      {rep.gmacs_total:8.2f}  (official network, decoder excluded: paper Tables 1/2/6)")
    print(f"gmacs_actual     {rep.gmacs_actual:8.2f}  (what our sampler runs)")
    if rep.gmacs_condition:
        print(f"gmacs_condition  {rep.gmacs_condition:8.2f}  (in both totals: captions projected once per sample)")
    print(f"gmacs_vq_decoder {rep.gmacs_vq_decoder:8.2f}  (one decoder call, {args.vq})")
    print(f"tflops_paper     {rep.tflops_paper:8.3f}  (incl. decoder: paper Table 3/4 'TFLOPs')")
    print("Convention: multiply-accumulates per image, all steps, cond + uncond passes.")
    return 0
