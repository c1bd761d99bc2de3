"""`make demo` / `enat demo`: the whole framework end to end on real MNIST digits, on CPU.

1. builds the demo shards (MNIST 32x32 -> an 8x8 grid of 64 tokens) and the demo classifier if absent;
2. trains ``experiments/demo.yaml`` (a small ENAT with reuse-aware training) through LightningCLI,
   resuming ``last.ckpt`` when a previous run was interrupted;
3. samples a class-conditional grid (one row per class) with the EMA weights;
4. evaluates, with and without computation reuse: FID with the real Inception-v3 (the offline
   TF-Inception of the [eval] extra; the held-out digits' features from the committed feature cache) against
   the 500 held-out digits, the class accuracy of the samples under the demo classifier, GFLOPs per image
   in the paper's convention, and time per image, in one table;
5. writes ``demo_results.json`` (each row with the tokenizer's floor beside it), TensorBoard panels (a
   custom-scalars layout that opens on loss / accuracy / FID / GFLOPs), and prints where everything is.

``run_seeds`` (``enat demo --seeds 3``) repeats 1-5 for several training seeds and tabulates the spread.

FID of 500 samples against 500 digits is biased upwards by the small sample count: compare demo runs
with each other, never with ImageNet FID-50K.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from enat_lightning.fileio import atomic_write_text
from enat_lightning.sampling.settings import SamplerSettings, as_settings

REPO_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "demo.yaml"
TRAIN_RUN, EVAL_RUN = "train", "eval"  # TensorBoard run names under the demo directory


@dataclass(frozen=True)
class DemoSettings:
    """What the demo samples and evaluates, and the feature network of its FID (``inception``: the
    offline TF Inception-v3; ``demo``: the demo classifier's features, for quick tests).

    ``sampler`` None: the sampler of the config's FIDCallback (``sampler:`` in experiments/demo.yaml,
    tuned on the demo model; docs/demo.md) -- the demo declares no sampler defaults of its own."""

    sampler: SamplerSettings | None = None
    eval_samples: int = 500
    grid_per_class: int = 10
    seed: int = 0
    feature: str = "inception"
    timing_samples: int = 100
    feature_cache: bool = True  # reference images' Inception features from data/demo/features (compare_reuse)


def config_sampler(config: Path) -> SamplerSettings:
    """The SamplerSettings of the FIDCallback in a training config (SamplerSettings() if none is set)."""
    import yaml

    data = yaml.safe_load(Path(config).read_text()) or {}
    for cb in (data.get("trainer") or {}).get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("FIDCallback"):
            return as_settings((cb.get("init_args") or {}).get("sampler"))
    return SamplerSettings()


def train(config: Path, run_dir: Path, extra_args: list[str]) -> Path:
    """Runs (or resumes) the demo fit into ``run_dir/train``; returns the last checkpoint."""
    from enat_lightning.errors import UserError
    from enat_lightning.training_cli import run_lightning_cli

    last = run_dir / TRAIN_RUN / "checkpoints" / "last.ckpt"
    args = ["fit", "-c", str(config), f"--trainer.logger.init_args.save_dir={run_dir}",
            f"--trainer.logger.init_args.name={TRAIN_RUN}", "--trainer.logger.init_args.version=", *extra_args]
    if last.is_file():
        print(f"[demo] resuming from {last}")
    args += ["--ckpt_path", "last"]  # resumes the newest valid checkpoint; starts fresh when there is none
    rc = run_lightning_cli(args)
    if rc != 0:
        raise UserError(f"training failed (exit code {rc}); see the messages above")
    if not last.is_file():
        raise UserError(f"training finished but {last} was not written")
    return last


def class_grid(model, tokenizer, num_classes: int, per_class: int, sampler: SamplerSettings, seed: int) -> torch.Tensor:
    """(num_classes * per_class, 3, H, W) images in [0, 1], row c holding class c."""
    from enat_lightning.sampling import generate

    labels = torch.arange(num_classes).repeat_interleave(per_class)
    ids = generate(model, labels, sampler, generator=torch.Generator().manual_seed(seed))
    return tokenizer.decode(ids).clamp(0, 1)


def seconds_per_image(model, num_classes: int, sampler: SamplerSettings, n: int) -> float:
    """Wall time of the sampler alone (network + sampling, no decoding), best of 3 runs."""
    from enat_lightning.sampling import generate

    labels = torch.arange(n) % num_classes
    best = float("inf")
    for rep in range(3):
        t = time.perf_counter()
        generate(model, labels, sampler, generator=torch.Generator().manual_seed(rep))
        best = min(best, time.perf_counter() - t)
    return best / n


def compare_reuse(model, tokenizer, s: DemoSettings, sampler: SamplerSettings, dataset: str = "mnist",
                  extractor=None, cache: dict | None = None) -> tuple[list[dict], list[dict]]:
    """ENAT with and without computation reuse: FID, accuracy, GFLOPs and time per image; and, for scale,
    the same FID of real training digits and of the tokenizer's reconstructions of the held-out digits
    (what no model on these tokens can beat) -> (sampler rows, reference rows).

    FID: the Fréchet distance of the feature network's features (``evaluation.frechet.fid_from_features``,
    exact, float64) of the samples against the held-out digits. The reference images (held-out digits,
    training digits, reconstructions) are fixed, so with ``s.feature_cache`` their Inception features are
    read from the content-addressed cache (``evaluation.feature_cache``: keyed by the exact pixels; the
    demo's are committed in ``data/demo/features``) -- only the samples go through the network. ``cache``
    (a dict kept by the caller, e.g. across the seeds of ``run_seeds``) keeps the real features and the
    reference rows in memory."""
    from enat_lightning.evaluation import generate_images, sample_labels, score_images
    from enat_lightning.evaluation.evaluate import extract
    from enat_lightning.evaluation.extractors import INCEPTION_NAME
    from enat_lightning.evaluation.feature_cache import cached_features
    from enat_lightning.evaluation.features import load_feature_extractor
    from enat_lightning.evaluation.flops import count_generation
    from enat_lightning.evaluation.frechet import fid_from_features

    from .classifier import load_demo_features
    from .data import demo_paths

    extractor = extractor or load_feature_extractor(s.feature)
    classifier = load_demo_features(dataset)

    # Only the Inception's name pins its weights; the demo classifier is retrained per checkout
    persistent = s.feature_cache and extractor.name == INCEPTION_NAME

    def features(uint8_images: torch.Tensor, fixed: bool = False) -> torch.Tensor:
        """fixed: reference images (the same every run), whose features the cache keeps; never samples"""
        if fixed and persistent:
            return cached_features(extractor, uint8_images, demo_paths(None, dataset).features)
        return extract(extractor, uint8_images, 250)[0]

    cache = {} if cache is None else cache
    key = (extractor.name, dataset, json.dumps(tokenizer.identity(), sort_keys=True, default=str), s.eval_samples)
    real = cache.get(("real",) + key)
    if real is None:
        real = cache[("real",) + key] = features(held_out_images(dataset)[0], fixed=True)
    labels = sample_labels(s.eval_samples, model.cfg.num_classes)
    rows = []
    for reuse in (True, False):
        settings = dataclasses.replace(sampler, reuse=reuse)
        _, fake = generate_images(model, tokenizer, labels, settings, seed=s.seed, batch_size=250)
        flops = count_generation(model.cfg, settings, vq=None)
        rows.append({"sampler": "ENAT, reuse" if reuse else "ENAT, w/o reuse", "reuse": reuse,
                     "fid": fid_from_features(real, features(fake)),
                     "feature_network": getattr(extractor, "description", extractor.name),
                     "feature": extractor.name, "fid_real_samples": len(real), "fid_fake_samples": len(fake),
                     "accuracy": score_images(fake, labels, classifier, None)["accuracy"],
                     "gflops_per_image": flops.gmacs_total,
                     "ms_per_image": 1e3 * seconds_per_image(model, model.cfg.num_classes, settings,
                                                             s.timing_samples)})
    reference = cache.get(("reference",) + key)
    if reference is None:
        reference = []
        for name, (imgs, labs) in reference_images(tokenizer, dataset, s.eval_samples).items():
            reference.append({"reference": name, "fid": fid_from_features(real, features(imgs, fixed=True)),
                              "fid_fake_samples": len(imgs),
                              "accuracy": score_images(imgs, labs, classifier, None)["accuracy"]})
        cache[("reference",) + key] = reference
    floor = next(r for r in reference if r["reference"] == "tokenizer reconstructions")
    real_row = next(r for r in reference if r["reference"] == "real training digits")
    for row in rows:  # the floor beside each row: no model on these tokens can beat the reconstructions
        row.update(tokenizer_floor_fid=floor["fid"], tokenizer_floor_accuracy=floor["accuracy"],
                   fid_over_floor=row["fid"] / floor["fid"], real_vs_real_fid=real_row["fid"])
    return rows, reference


def held_out_images(dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """The digits every demo FID is measured against: uint8 (N, 3, H, W) and labels (N,)."""
    from enat_lightning.evaluation.features import to_uint8

    from .data import load_images

    images, labels, is_val = load_images(dataset)
    return to_uint8(images[is_val]), labels[is_val]


def reference_images(tokenizer, dataset: str = "mnist",
                     n: int = 500) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The demo's rows for scale, name -> (uint8 images (N, 3, H, W), labels): ``n`` real training digits
    (a fixed subset, the same for every run) and the tokenizer's reconstructions of the held-out digits."""
    from enat_lightning.evaluation.features import to_uint8

    from .data import load_images

    images, labels, is_val = load_images(dataset)
    pick = torch.randperm(int((~is_val).sum()), generator=torch.Generator().manual_seed(0))[:n]
    with torch.no_grad():
        recon = tokenizer.decode(tokenizer.encode(images[is_val])).clamp(0, 1)
    return {"real training digits": (to_uint8(images[~is_val][pick]), labels[~is_val][pick]),
            "tokenizer reconstructions": (to_uint8(recon), labels[is_val])}


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Demo evaluation (FID: {rows[0]['feature_network']}; {rows[0]['fid_fake_samples']} "
                        f"samples vs {rows[0]['fid_real_samples']} held-out digits. GFLOPs: MACs, cond + uncond, "
                        f"all steps)")
    for col in ("sampler", "FID ↓", "FID / tokenizer floor ↓", "class accuracy ↑", "GFLOPs/image ↓", "ms/image ↓"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["sampler"], f"{r['fid']:.2f}", f"{r['fid_over_floor']:.2f}", f"{100 * r['accuracy']:.1f} %",
                      f"{r['gflops_per_image']:.4f}", f"{r['ms_per_image']:.2f}")
    Console(width=140).print(table)


def run_demo(config: Path = REPO_CONFIG, run_dir: Path = Path("runs/demo"), settings: DemoSettings = DemoSettings(),
             extra_args: list[str] | None = None, cache: dict | None = None) -> dict:
    from enat_lightning.evaluation.features import load_feature_extractor
    from enat_lightning.sampling.checkpoint import load_checkpoint_dict, load_generator
    from enat_lightning.sampling.io import make_grid, save_png, to_uint8

    from .classifier import build_demo_classifier
    from .data import ensure_demo_data, load_demo_tokenizer

    t0 = time.time()
    run_dir = Path(run_dir)
    print("[demo] 1/5 demo data (MNIST -> 8x8 tokens) and demo classifier")
    paths = ensure_demo_data()
    build_demo_classifier()
    tokenizer = load_demo_tokenizer()
    h, w = tokenizer.token_shape
    side = h * tokenizer.downsample
    print(f"[demo]     MNIST {side}x{side} digits -> {h}x{w} = {h * w} tokens of {tokenizer.codebook_size} codes "
          f"({paths.tokenizer})")
    extractor = load_feature_extractor(settings.feature)  # a missing [eval] extra fails now, not after training

    print(f"[demo] 2/5 training {config} (TensorBoard logs in {run_dir})")
    ckpt = train(Path(config), run_dir, list(extra_args or []))
    t_train = time.time()

    print("[demo] 3/5 sampling a class-conditional grid with the EMA weights")
    model, cfg = load_generator(ckpt)
    sampler = settings.sampler or config_sampler(Path(config))
    images = class_grid(model, tokenizer, cfg.num_classes, settings.grid_per_class, sampler, settings.seed)
    grid = make_grid(to_uint8(images), nrow=settings.grid_per_class)
    grid_path = save_png(run_dir / "demo_grid.png", upscale(grid, 2))

    print(f"[demo] 4/5 evaluating with and without computation reuse (FID: {settings.feature})")
    rows, reference = compare_reuse(model, tokenizer, settings, sampler, extractor=extractor, cache=cache)
    print_table(rows)
    for r in reference:
        print(f"  for scale: {r['reference']}: FID {r['fid']:.2f}, class accuracy {100 * r['accuracy']:.1f} %")

    step = int(load_checkpoint_dict(ckpt).get("global_step", 0))
    results = {"checkpoint": str(ckpt), "grid": str(grid_path),
               "settings": {**asdict(settings), "sampler": sampler.to_dict()}, "rows": rows, "reference": reference,
               "train_steps": step, "minutes": (time.time() - t0) / 60, "train_minutes": (t_train - t0) / 60}
    results_path = atomic_write_text(run_dir / "demo_results.json", json.dumps(results, indent=2))
    log_to_tensorboard(run_dir, rows, grid, step)

    print("[demo] 5/5 done in {:.1f} min".format(results["minutes"]))
    print(f"  grid (one row per class 0-9):  {grid_path}")
    print(f"  checkpoint (EMA inside):       {ckpt}")
    print(f"  results:                       {results_path}")
    print(f"  TensorBoard:                   tensorboard --logdir {run_dir}   (open the CUSTOM SCALARS tab first)")
    return results


def run_seeds(seeds: int, config: Path = REPO_CONFIG, run_dir: Path = Path("runs/demo"),
              settings: DemoSettings = DemoSettings(), extra_args: list[str] | None = None,
              base_seed: int | None = None) -> dict:
    """The whole demo for ``seeds`` training seeds (``enat demo --seeds 3``): seed k trains with
    ``seed_everything`` and ``model.recipe_seed`` = base + k (base: the config's ``seed_everything``, so seed
    0 is `make demo` itself) and samples with seed k, in ``run_dir/seed<k>``; -> the table of every run and
    the spread (max - min) of accuracy in points and of FID relative to the mean, written to
    ``run_dir/demo_seeds.json`` and ``run_dir/demo_seeds.md``."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    base = config_seed(Path(config)) if base_seed is None else base_seed
    runs, cache = [], {}  # the real features and reference rows are measured once for all seeds
    for k in range(seeds):
        print(f"[demo] seed {k + 1}/{seeds}: seed_everything = model.recipe_seed = {base + k}, sampling seed {k}")
        args = [*(extra_args or []), f"--seed_everything={base + k}", f"--model.recipe_seed={base + k}"]
        r = run_demo(config, Path(run_dir) / f"seed{k}", dataclasses.replace(settings, seed=k), args, cache=cache)
        runs.append({"seed": base + k, "sampling_seed": k, "minutes": r["minutes"], "rows": r["rows"],
                     "reference": r["reference"]})
    summary = seed_spread(runs)
    out = {"config": str(config), "seeds": seeds, "runs": runs, "spread": summary}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / "demo_seeds.json", json.dumps(out, indent=2))
    table = seed_table(runs, summary)
    atomic_write_text(Path(run_dir) / "demo_seeds.md", table + "\n")
    print(table)
    print(f"  seed table: {Path(run_dir) / 'demo_seeds.md'} (and demo_seeds.json)")
    return out


def config_seed(config: Path) -> int:
    """``seed_everything`` of a training config (0 when it sets none)."""
    import yaml

    value = (yaml.safe_load(Path(config).read_text()) or {}).get("seed_everything", 0)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def seed_spread(runs: list[dict]) -> dict:
    """Per sampler row over the runs: mean, min, max of FID and accuracy; accuracy spread in points
    (max - min) and FID spread relative to the mean FID."""
    out = {}
    for i, row in enumerate(runs[0]["rows"]):
        fids = [r["rows"][i]["fid"] for r in runs]
        accs = [100 * r["rows"][i]["accuracy"] for r in runs]
        mean_fid = sum(fids) / len(fids)
        out[row["sampler"]] = {"fid_mean": mean_fid, "fid_min": min(fids), "fid_max": max(fids),
                               "fid_spread_rel": (max(fids) - min(fids)) / mean_fid,
                               "accuracy_mean": sum(accs) / len(accs), "accuracy_min": min(accs),
                               "accuracy_max": max(accs), "accuracy_spread_points": max(accs) - min(accs)}
    return out


def seed_table(runs: list[dict], spread: dict) -> str:
    """Markdown: one line per seed and sampler, then the spread per sampler."""
    lines = ["| seed | sampler | FID | tokenizer floor | FID / floor | class accuracy | GFLOPs/image | ms/image |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for r in run["rows"]:
            lines.append(f"| {run['seed']} | {r['sampler']} | {r['fid']:.2f} | {r['tokenizer_floor_fid']:.2f} | "
                         f"{r['fid_over_floor']:.2f} | {100 * r['accuracy']:.1f} % | {r['gflops_per_image']:.4f} | "
                         f"{r['ms_per_image']:.2f} |")
    lines += ["", "| sampler | FID mean (min-max) | FID spread / mean | accuracy mean (min-max) | accuracy spread |",
              "|---|---|---|---|---|"]
    for name, s in spread.items():
        lines.append(f"| {name} | {s['fid_mean']:.2f} ({s['fid_min']:.2f}-{s['fid_max']:.2f}) | "
                     f"{100 * s['fid_spread_rel']:.1f} % | {s['accuracy_mean']:.1f} % ({s['accuracy_min']:.1f}-"
                     f"{s['accuracy_max']:.1f}) | {s['accuracy_spread_points']:.1f} points |")
    return "\n".join(lines)


def upscale(grid, factor: int):
    """Nearest-neighbour upscaling so the small digits are visible in an image viewer."""
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def dashboard_layout() -> dict:
    """TensorBoard custom-scalars layout (``SummaryWriter.add_custom_scalars`` writes it as a
    ``layout_pb2.Layout``): what a user looks at first. Tags are regular expressions matched over every
    run under the demo directory (train and eval); dicts keep their order, so loss comes first."""
    return {
        "ENAT demo: what matters": {
            "loss (masked-token cross-entropy)": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
            "accuracy (demo classifier on samples; masked tokens)": [
                "Multiline", [r"^demo_classifier/accuracy$", r"^demo/accuracy_.*", r"^train/acc$"]],
            "FID (Inception-v3 at the end; demo-classifier features during training)": [
                "Multiline", [r"^demo/fid_.*", r"^demo_classifier/fid$"]],
            "GFLOPs per image": ["Multiline", [r"^demo/gflops_.*", r"^flops/gmacs_total$"]],
            "ms per image (sampler, CPU)": ["Multiline", [r"^demo/ms_per_image_.*"]],
        },
        "training": {
            "learning rate": ["Multiline", [r"^lr$"]],
            "gradient norm": ["Multiline", [r"^grad_norm$"]],
            "throughput": ["Multiline", [r"^samples/s$", r"^tokens/s$"]],
        },
    }


def log_to_tensorboard(run_dir: Path, rows: list[dict], grid, step: int) -> None:
    """The evaluation run ``eval`` beside ``train``: final metrics, the class grid, the dashboard layout."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / EVAL_RUN))
    writer.add_custom_scalars(dashboard_layout())
    writer.add_image("demo/class_grid", grid, step, dataformats="HWC")
    for r in rows:
        tag = "reuse" if r["reuse"] else "no_reuse"
        for key, name in (("fid", "fid"), ("accuracy", "accuracy"), ("gflops_per_image", "gflops"),
                          ("ms_per_image", "ms_per_image")):
            writer.add_scalar(f"demo/{name}_{tag}", r[key], step)
    writer.add_text("demo/results", "\n".join(
        [f"FID network: {rows[0]['feature_network']}", "",
         "| sampler | FID | accuracy | GFLOPs/image | ms/image |", "|---|---|---|---|---|"]
        + [f"| {r['sampler']} | {r['fid']:.2f} | {100 * r['accuracy']:.1f} % | {r['gflops_per_image']:.4f} | "
           f"{r['ms_per_image']:.2f} |" for r in rows]), step)
    writer.close()
