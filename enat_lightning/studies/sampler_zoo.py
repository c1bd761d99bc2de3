"""The sampler zoo study: one checkpoint, many SamplerSettings, no training (issue 16).

Every token order x guidance schedule (and the skipped-unconditional-pass variants) is sampled from
the same checkpoint and measured: FID (real Inception when the spec names its weights and reference
statistics, else the demo feature network -- the ``feature`` column says which), IS where the
feature network has logits, precision and recall (k-NN manifolds against the reference images: fidelity
vs diversity), GFLOPs per image (``evaluation.flops.count_generation``: what the
sampler runs, and the paper's convention), and seconds per image (the sampler alone, no decoding).
Outputs, each written atomically: ``results.csv``, ``results.md`` and ``fid_vs_gflops.png`` (the
Pareto front -- no other row has both lower FID and fewer GFLOPs -- marked).

Spec (``experiments/studies/sampler_zoo.yaml``)::

    kind: sampler_zoo
    name: sampler_zoo
    checkpoint: runs/demo/train/checkpoints/last.ckpt  # or --ckpt
    base: {cfg_scale: 3.0}                       # SamplerSettings fields shared by every row
    orders: [confidence, random, halton]
    guidance:                                    # name -> fields added for that schedule
      linear: {}
      power: {guidance_power: 2.75}
    variants:                                    # name -> fields, run with every order (base guidance)
      skip_uncond: {uncond_skip_steps: [3, 5, 7]}
    rows: [{name: autonat, sampler: {strategy: my_strategy.yaml}}]   # optional extra rows
    evaluation: {num_samples: 500, seed: 0, batch_size: 250, feature: demo, ref_stats: "demo:val",
                 tokenizer: demo, time_samples: 100, metrics: all}   # metrics: e.g. "fid,precision,recall"

Run: ``enat study run experiments/studies/sampler_zoo.yaml --ckpt CKPT [--num-samples N] [--out DIR]``
(the one entry point; commands/study.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from enat_lightning.analysis.report import markdown_table, pyplot, save_figure, write_csv
from enat_lightning.fileio import atomic_write_bytes
from enat_lightning.sampling.settings import SamplerSettings

from .study import check_sampling, resolve_path
from enat_lightning.errors import InvalidInput, MissingInput

SPEC_KEYS = {"kind", "name", "title", "checkpoint", "base", "orders", "guidance", "variants", "rows",
             "evaluation", "notes"}
EVAL_DEFAULTS = {"num_samples": 500, "seed": 0, "batch_size": 250, "feature": "demo", "ref_stats": "demo:val",
                 "tokenizer": "demo", "time_samples": 100, "time_repeats": 2, "metrics": "all"}


@dataclass
class ZooRow:
    name: str
    sampler: SamplerSettings


@dataclass
class ZooSpec:
    name: str
    title: str
    path: Path
    checkpoint: str | None
    rows: list[ZooRow]
    evaluation: dict = field(default_factory=dict)


def is_zoo_spec(path: str | os.PathLike) -> bool:
    try:
        d = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(d, dict) and d.get("kind") == "sampler_zoo"


def load_zoo(path: str | os.PathLike) -> ZooSpec:
    """Parses a zoo spec into rows of SamplerSettings; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"sampler zoo spec {path} does not exist")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict) or d.get("kind") != "sampler_zoo":
        raise InvalidInput(f"{path}: not a sampler zoo spec (needs kind: sampler_zoo)")
    unknown = sorted(set(d) - SPEC_KEYS)
    if unknown:
        raise InvalidInput(f"{path}: unknown key(s) {unknown}; known: {sorted(SPEC_KEYS)}")
    base = dict(d.get("base") or {})
    check_sampling(path, "base", base)
    orders = list(d.get("orders") or [SamplerSettings.order])
    guidance = dict(d.get("guidance") or {SamplerSettings.guidance: {}})
    rows: list[ZooRow] = []

    def add(name: str, key: str, fields_: dict):
        rows.append(ZooRow(name, check_sampling(path, key, {**base, **fields_})))

    for order in orders:
        for g, extra in guidance.items():
            add(f"{order} / {g}", f"guidance.{g}", {"order": order, "guidance": g, **(extra or {})})
    for v, extra in (d.get("variants") or {}).items():
        for order in orders:
            add(f"{order} / {base.get('guidance', SamplerSettings.guidance)} + {v}", f"variants.{v}",
                {"order": order, **(extra or {})})
    for i, r in enumerate(d.get("rows") or []):
        if not isinstance(r, dict) or "name" not in r or set(r) - {"name", "sampler"}:
            raise InvalidInput(f"{path}: rows[{i}] must be {{name: ..., sampler: {{...}}}}, got {r!r}")
        sampler = dict(r.get("sampler") or {})
        if "strategy" in sampler and sampler["strategy"]:
            sampler["strategy"] = str(resolve_path(sampler["strategy"], path))
        add(str(r["name"]), f"rows[{i}].sampler", sampler)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{path}: row names must be distinct, got {names}")
    ev = dict(d.get("evaluation") or {})
    bad = sorted(set(ev) - set(EVAL_DEFAULTS))
    if bad:
        raise InvalidInput(f"{path}: evaluation: unknown key(s) {bad}; known: {sorted(EVAL_DEFAULTS)}")
    return ZooSpec(str(d.get("name") or path.stem), str(d.get("title") or d.get("name") or path.stem), path,
                   d.get("checkpoint"), rows, {**EVAL_DEFAULTS, **ev})


def seconds_per_image(model, num_classes: int, settings: SamplerSettings, n: int, repeats: int) -> float:
    """Wall time of the sampler alone (network + sampling, no decoding), best of ``repeats``."""
    from enat_lightning.sampling import generate

    device = next(model.parameters()).device
    labels = (torch.arange(n) % num_classes).to(device)
    best = float("inf")
    for rep in range(max(1, repeats)):
        t = time.perf_counter()
        generate(model, labels, settings, generator=torch.Generator(device=device).manual_seed(rep))
        best = min(best, time.perf_counter() - t)
    return best / n


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, fid) points: True where no other point is <= in both and < in one."""
    out = []
    for i, (c, f) in enumerate(points):
        dominated = any((c2 <= c and f2 <= f) and (c2 < c or f2 < f)
                        for j, (c2, f2) in enumerate(points) if j != i)
        out.append(not dominated and f == f and c == c)
    return out


def _evaluator(ev: dict, device: str, codebook_size: int, where: str, tokenizer_name: str):
    """(tokenizer, extractor, reference stats) of the spec's evaluation section; a tokenizer that cannot decode
    the generator's ``codebook_size`` codes is refused before the feature network loads."""
    from enat_lightning.tokenizers import check_codebook_size, load_tokenizer
    from enat_lightning.evaluation import load_feature_extractor
    from enat_lightning.evaluation.metrics import parse_metrics
    from enat_lightning.evaluation.reference_batch import load_reference_spec

    tok = load_tokenizer(ev["tokenizer"])
    check_codebook_size(tok, codebook_size, where, tokenizer_name)
    if hasattr(tok, "to"):
        tok = tok.to(device)
    extractor = load_feature_extractor(ev["feature"], device=device)
    images = bool({"precision", "recall"} & set(parse_metrics(ev["metrics"])))  # reference images for the k-NN
    # demo:[DATASET:]SPLIT (the digits themselves) or an .npz (ADM layout: arr_0 holds the reference images)
    ref = load_reference_spec(ev["ref_stats"], extractor, images=images) if ev["ref_stats"] else None
    return tok, extractor, ref


def run_zoo(spec: ZooSpec, out_dir: str | os.PathLike, *, ckpt: str | os.PathLike | None = None,
            device: str = "cpu", overrides: dict | None = None) -> list[dict]:
    """Evaluates every row of ``spec`` on one checkpoint; writes results.csv/.md and the plot.

    ``overrides``: evaluation keys replacing the spec's (e.g. a smaller ``num_samples`` in tests).
    Results are rewritten after every row, so a long run shows progress.
    """
    from enat_lightning.evaluation import evaluate
    from enat_lightning.evaluation.flops import count_generation
    from enat_lightning.sampling.checkpoint import load_generator
    from enat_lightning.tokenizers import spec_text

    ckpt = ckpt or spec.checkpoint
    if not ckpt:
        raise InvalidInput(f"{spec.path}: no checkpoint: set `checkpoint:` in the spec or pass --ckpt")
    ckpt = Path(ckpt)
    if not ckpt.exists():  # a .ckpt file or an export folder
        raise MissingInput(f"checkpoint {ckpt} does not exist (train one: `python -m enat_lightning.demo` "
                                f"or `enat fit -c experiments/demo.yaml`)")
    ev = {**spec.evaluation, **(overrides or {})}
    model, cfg = load_generator(ckpt, device=device)
    tok, extractor, ref = _evaluator(ev, device, cfg.codebook_size, f"the generator {ckpt}",
                                     f"evaluation.tokenizer {spec_text(ev['tokenizer'])} of {spec.path}")
    out = Path(out_dir)
    results = []
    for row in spec.rows:
        s = row.sampler
        res = evaluate(model, tok, extractor, num_samples=int(ev["num_samples"]), ref=ref, settings=s,
                       seed=int(ev["seed"]), batch_size=int(ev["batch_size"]), metrics=ev["metrics"])
        flops = count_generation(cfg, s, vq=None)
        results.append({
            "sampler": row.name, "order": s.order, "guidance": s.guidance,
            "uncond_skip_steps": ",".join(map(str, s.uncond_skip_steps)) or "-",
            "fid": float(res.get("fid", float("nan"))), "is": float(res.get("is_mean", float("nan"))),
            "accuracy": float(res.get("accuracy", float("nan"))),
            # fidelity vs diversity: a sampler that trades one for the other shows here, not in FID alone
            "precision": float(res.get("precision", float("nan"))), "recall": float(res.get("recall", float("nan"))),
            "gflops_per_image": flops.gmacs_actual, "gflops_paper_convention": flops.gmacs_total,
            "uncond_passes": sum(p.uncond_ran for p in flops.per_step),
            "s_per_image": seconds_per_image(model, cfg.num_classes, s, int(ev["time_samples"]),
                                             int(ev["time_repeats"])),
            "feature": res["feature"], "num_samples": int(ev["num_samples"]),
            "settings": yaml.safe_dump(s.to_dict(), default_flow_style=True, width=10_000).strip(),
        })
        write_zoo_results(spec, results, out, ckpt)
    return results


def write_zoo_results(spec: ZooSpec, rows: list[dict], out_dir: Path, ckpt: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "md": out_dir / "results.md", "png": out_dir / "fid_vs_gflops.png"}
    front = pareto_front([(r["gflops_per_image"], r["fid"]) for r in rows])
    full = [{**r, "pareto": bool(p)} for r, p in zip(rows, front)]
    write_csv(paths["csv"], full)
    feature = rows[0]["feature"] if rows else "?"
    is_name = "IS" if "inception" in feature.lower() else f"IS ({feature} classifier)"
    pretty = [{"sampler": r["sampler"], f"FID ({r['feature']} features)": r["fid"], is_name: r["is"],
               "precision": r["precision"], "recall": r["recall"],
               "GFLOPs/img (run)": r["gflops_per_image"], "GFLOPs/img (paper conv.)": r["gflops_paper_convention"],
               "uncond passes": r["uncond_passes"], "ms/img": 1e3 * r["s_per_image"],
               "Pareto": "yes" if r["pareto"] else ""} for r in full]
    text = (f"# {spec.title}\n\nSpec `{spec.path}`, checkpoint `{ckpt}`, {rows[0]['num_samples'] if rows else 0} "
            f"samples per row. FID uses the `{feature}` feature network"
            f"{'' if 'inception' in feature.lower() else ' (the demo classifier, NOT Inception: comparable between rows and demo runs only)'}. "
            f"GFLOPs = multiply-accumulates per image (the paper's unit), network only, all steps: `run` counts what the "
            f"sampler executes, `paper conv.` the official convention (logits at all positions). ms/img: the sampler "
            f"alone on this machine. Pareto: no other row has both lower FID and fewer GFLOPs (run).\n\n"
            + markdown_table(pretty, floatfmt="{:.4g}"))
    atomic_write_bytes(paths["md"], text.encode())
    plot_fid_vs_gflops(full, paths["png"], title=spec.title, feature=feature)
    return paths


def plot_fid_vs_gflops(rows: list[dict], path: Path, title: str = "", feature: str = "") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"confidence": "o", "random": "s", "halton": "^"}
    for r in rows:
        ax.scatter(r["gflops_per_image"], r["fid"], marker=markers.get(r["order"], "x"),
                   color="tab:red" if r["pareto"] else "tab:blue", s=45, zorder=3)
        ax.annotate(r["sampler"], (r["gflops_per_image"], r["fid"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    front = sorted((r["gflops_per_image"], r["fid"]) for r in rows if r["pareto"])
    if front:
        ax.step([c for c, _ in front], [f for _, f in front], where="post", color="tab:red", lw=1,
                label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("GMACs per image (sampler run, network only)")
    ax.set_ylabel(f"FID ({feature} features)")
    ax.set_title(f"{title}\nmarker: o confidence, s random, ^ halton", fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)
    return path
