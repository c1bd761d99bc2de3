"""`make demo` / `enat demo`: the whole framework end to end on the embedded demo data, on CPU.

1. builds the demo shards, demo tokenizer and demo classifier if absent (seconds);
2. trains ``experiments/demo.yaml`` (a small ENAT with reuse-aware training) through LightningCLI,
   resuming ``last.ckpt`` when a previous run was interrupted;
3. samples a class-conditional grid (one row per class) with the EMA weights;
4. evaluates demo-FID against the held-out digits, the class accuracy of the samples under the demo
   classifier, GFLOPs per image in the paper's convention, and time per image, with and without
   computation reuse, in one table;
5. prints where everything is and the ``tensorboard`` command.

demo-FID uses the demo classifier's features, not Inception: it is comparable between demo runs,
never with ImageNet FID.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from enat_lightning.fileio import atomic_write_text
from enat_lightning.sampling.settings import SamplerSettings, as_settings

REPO_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo samples and evaluates. ``sampler`` None: the sampler of the config's
    FIDCallback (``sampler:`` in experiments/demo.yaml, tuned on the demo model)."""

    sampler: SamplerSettings | None = None
    eval_samples: int = 1000
    grid_per_class: int = 10
    seed: int = 0


def config_sampler(config: Path) -> SamplerSettings:
    """The SamplerSettings of the FIDCallback in a training config (its defaults if none is set)."""
    import yaml

    data = yaml.safe_load(Path(config).read_text()) or {}
    for cb in (data.get("trainer") or {}).get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("FIDCallback"):
            return as_settings((cb.get("init_args") or {}).get("sampler"))
    return SamplerSettings()


def train(config: Path, run_dir: Path, extra_args: list[str]) -> Path:
    """Runs (or resumes) the demo fit; returns the last checkpoint."""
    from enat_lightning.errors import UserError
    from enat_lightning.training_cli import run_lightning_cli

    last = run_dir / "checkpoints" / "last.ckpt"
    args = ["fit", "-c", str(config),
            f"--trainer.logger.init_args.save_dir={run_dir.parent}",
            f"--trainer.logger.init_args.name={run_dir.name}", *extra_args]
    if last.is_file():
        print(f"[demo] resuming from {last}")
    args += ["--ckpt_path", "last"]  # resumes the newest valid checkpoint; starts fresh when there is none
    rc = run_lightning_cli(args)
    if rc != 0:
        raise UserError(f"training failed (exit code {rc}); see the messages above")
    if not last.is_file():
        raise UserError(f"training finished but {last} was not written")
    return last


def class_grid(model, tokenizer, num_classes: int, per_class: int, sampler: SamplerSettings,
               seed: int = 0) -> torch.Tensor:
    """(num_classes * per_class, 3, H, W) images in [0, 1], row c holding class c."""
    from enat_lightning.sampling import generate

    labels = torch.arange(num_classes).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    ids = generate(model, labels, sampler, generator=g)
    return tokenizer.decode(ids).clamp(0, 1)


def seconds_per_image(model, num_classes: int, sampler: SamplerSettings, n: int = 200) -> float:
    """Wall time of the sampler alone (network + sampling, no decoding), best of 3 runs."""
    from enat_lightning.sampling import generate

    labels = torch.arange(n) % num_classes
    best = float("inf")
    for rep in range(3):
        t = time.perf_counter()
        generate(model, labels, sampler, generator=torch.Generator().manual_seed(rep))
        best = min(best, time.perf_counter() - t)
    return best / n


def compare_reuse(model, tokenizer, s: DemoSettings, sampler: SamplerSettings) -> list[dict]:
    """ENAT with and without computation reuse: quality, GFLOPs and time per image."""
    from enat_lightning.evaluation.flops import count_generation
    from enat_lightning.evaluation import evaluate, load_feature_extractor
    from enat_lightning.evaluation.reference import demo_reference_stats

    extractor = load_feature_extractor("demo")
    ref = demo_reference_stats(extractor, split="val")
    rows = []
    for reuse in (True, False):
        settings = dataclasses.replace(sampler, reuse=reuse)
        res = evaluate(model, tokenizer, extractor, num_samples=s.eval_samples, ref=ref, settings=settings,
                       seed=s.seed, batch_size=250)
        flops = count_generation(model.cfg, settings, vq=None)
        rows.append({"sampler": "ENAT, reuse" if reuse else "ENAT, w/o reuse", "reuse": reuse,
                     "demo_fid": res["fid"], "accuracy": res["accuracy"],
                     "gflops_per_image": flops.gmacs_total,
                     "ms_per_image": 1e3 * seconds_per_image(model, model.cfg.num_classes, settings)})
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Demo evaluation (demo-FID: demo-classifier features vs held-out digits; "
                        "GFLOPs: MACs, cond + uncond, all steps)")
    for col in ("sampler", "demo-FID ↓", "class accuracy ↑", "GFLOPs/image ↓", "ms/image ↓"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["sampler"], f"{r['demo_fid']:.2f}", f"{100 * r['accuracy']:.1f} %",
                      f"{r['gflops_per_image']:.4f}", f"{r['ms_per_image']:.2f}")
    Console(width=120).print(table)


def run_demo(config: Path = REPO_CONFIG, run_dir: Path = Path("runs/demo"), settings: DemoSettings = DemoSettings(),
             extra_args: list[str] | None = None) -> dict:
    from enat_lightning.data.demo import ensure_demo_data
    from enat_lightning.evaluation.demo_classifier import build_demo_classifier
    from enat_lightning.sampling.checkpoint import load_generator
    from enat_lightning.sampling.io import make_grid, save_png, to_uint8
    from enat_lightning.tokenizers.demo import DemoTokenizer

    t0 = time.time()
    print("[demo] 1/5 demo data, tokenizer and classifier")
    paths = ensure_demo_data()
    build_demo_classifier()

    print(f"[demo] 2/5 training {config} (TensorBoard logs in {run_dir})")
    ckpt = train(Path(config), Path(run_dir), list(extra_args or []))

    print("[demo] 3/5 sampling a class-conditional grid with the EMA weights")
    model, cfg = load_generator(ckpt)
    tokenizer = DemoTokenizer.load(paths.tokenizer)
    sampler = settings.sampler or config_sampler(Path(config))
    images = class_grid(model, tokenizer, cfg.num_classes, settings.grid_per_class, sampler, settings.seed)
    grid = make_grid(to_uint8(images), nrow=settings.grid_per_class)
    grid_path = save_png(Path(run_dir) / "demo_grid.png", upscale(grid, 4))

    print("[demo] 4/5 evaluating with and without computation reuse")
    rows = compare_reuse(model, tokenizer, settings, sampler)
    print_table(rows)

    results = {"checkpoint": str(ckpt), "grid": str(grid_path), "settings": {**{k: v for k, v in settings.__dict__.items() if k != "sampler"}, "sampler": sampler.to_dict()},
               "rows": rows,
               "minutes": (time.time() - t0) / 60}
    results_path = atomic_write_text(Path(run_dir) / "demo_results.json", json.dumps(results, indent=2))
    log_to_tensorboard(Path(run_dir), rows, sampler, grid)

    print("[demo] 5/5 done in {:.1f} min".format(results["minutes"]))
    print(f"  grid (one row per class 0-9):  {grid_path}")
    print(f"  checkpoint (EMA inside):       {ckpt}")
    print(f"  results:                       {results_path}")
    print(f"  TensorBoard:                   tensorboard --logdir {run_dir}")
    return results


def upscale(grid, factor: int):
    """Nearest-neighbour upscaling so 16x16 digits are visible in an image viewer."""
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def log_to_tensorboard(run_dir: Path, rows: list[dict], settings: SamplerSettings, grid) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / "demo_eval"))
    writer.add_image("demo/class_grid", grid, dataformats="HWC")
    for r in rows:
        tag = "reuse" if r["reuse"] else "no_reuse"
        writer.add_hparams({"sampler": r["sampler"], "steps": settings.steps, "cfg_scale": settings.cfg_scale,
                            "mask_temp": settings.mask_temp, "samp_temp": settings.samp_temp},
                           {f"hparam/demo_fid": r["demo_fid"], "hparam/accuracy": r["accuracy"],
                            "hparam/gflops_per_image": r["gflops_per_image"], "hparam/ms_per_image": r["ms_per_image"]},
                           run_name=tag)
    writer.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m enat_lightning.demo", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    from enat_lightning.cli import _guarded

    return _guarded(run, ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", type=Path, default=REPO_CONFIG)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--eval-samples", type=int, default=DemoSettings.eval_samples)
    ap.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the config's FIDCallback sampler)")
    ap.add_argument("overrides", nargs=argparse.REMAINDER,
                    help="extra LightningCLI arguments after `--`, e.g. -- --trainer.max_steps=200")


def run(args) -> int:
    sampler = None
    if args.cfg is not None:
        sampler = dataclasses.replace(config_sampler(args.config), cfg_scale=args.cfg)
    settings = DemoSettings(sampler=sampler, eval_samples=args.eval_samples)
    run_demo(args.config, args.run_dir, settings, [a for a in args.overrides if a != "--"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
