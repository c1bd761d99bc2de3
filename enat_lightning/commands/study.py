"""Run a study (Fig. 2, Tables 1/2/6): train each row, evaluate, write results.md/.csv with paper numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional


def _study(spec: Path, rows: Optional[list[str]]):
    from enat_lightning.errors import UserError
    from enat_lightning.studies.study import study_for_path

    study = study_for_path(spec)
    if rows:
        names = [r.name for r in study.rows]
        bad = [w for w in rows if w not in names]
        if bad:
            raise UserError(f"--rows {bad} not in study {study.path}; rows are {names}")
        study.rows = [r for r in study.rows if r.name in rows]
    return study


def _out(study, out: Optional[Path]) -> Path:
    return Path(out) if out else Path("runs") / "studies" / study.name


def plan(spec: Path, override: Optional[list[Path]] = None, set: Optional[list[str]] = None,
         rows: Optional[list[str]] = None, out: Optional[Path] = None) -> list[str]:
    """Print the rows and the `enat fit` command of each, without running.

    Args:
        spec: study spec (experiments/studies/*.yaml) or an ablation YAML listed in one
        override: config(s) composed after every row, e.g. experiments/studies/demo_tiny.yaml
        set: LightningCLI overrides applied last, e.g. trainer.max_steps=50
        rows: row names to run (default: all)
        out: study folder (default runs/studies/<name>)
    """
    from enat_lightning.studies.sampler_zoo import is_zoo_spec, load_zoo
    from enat_lightning.studies.study import slug

    if is_zoo_spec(spec):  # one checkpoint under many SamplerSettings, no training
        zoo = load_zoo(spec)
        lines = [f"- {row.name}: {row.sampler.to_dict()}" for row in zoo.rows]
        print("\n".join(lines))
        return lines
    study = _study(spec, rows)
    folder = _out(study, out)
    print(f"{study.title} ({study.path}); metrics {study.metrics}")
    lines = []
    for row in study.rows:
        cfgs = " ".join(f"-c {c}" for c in [*study.base, *row.configs, *(override or [])])
        sets = f" + overrides {', '.join(set)}" if set else ""
        ckpt = folder / slug(row.name) / "final.ckpt"
        state = "trained" if ckpt.is_file() else "to train"
        lines.append(f"- {row.name}: enat fit {cfgs}{sets}   paper {row.paper}   checkpoint {ckpt} ({state})")
        print(lines[-1])
    return lines


def run(spec: Path, override: Optional[list[Path]] = None, set: Optional[list[str]] = None,
        rows: Optional[list[str]] = None, out: Optional[Path] = None,
        metric: Literal["none", "demo-fid", "fid"] = "none", num_samples: Optional[int] = None,
        fid_stats: Optional[Path] = None, tokenizer: Optional[str] = None, inception: Optional[Path] = None,
        val_limit: Optional[int] = None, retrain: bool = False, seed: int = 0, device: str = "cpu",
        trust_checkpoint: bool = False, ckpt: Optional[Path] = None,
        metrics: str = "fid,is,accuracy", overwrite: bool = False) -> list[dict]:
    """Train (or reuse) and evaluate every row; rerun to resume. A sampler-zoo spec (``kind: sampler_zoo``)
    evaluates one --ckpt under many sampler settings instead (no training).

    Args:
        spec: study spec (experiments/studies/*.yaml) or an ablation YAML listed in one
        override: config(s) composed after every row, e.g. experiments/studies/demo_tiny.yaml
        set: LightningCLI overrides applied last, e.g. trainer.max_steps=50
        rows: row names to run (default: all)
        out: study folder (default runs/studies/<name>); rerun to resume
        metric: sample-quality metric per row (masked-token loss and GFLOPs are always measured where the spec lists them)
        num_samples: samples per row for --metric (default 1000; sampler zoo: the spec's)
        fid_stats: reference statistics .npz for --metric fid
        tokenizer: VQGAN checkpoint or JSON tokenizer spec for --metric fid
        inception: Inception-v3 FID weights file for --metric fid
        val_limit: use only the first N validation samples for the masked loss
        retrain: train rows again even if final.ckpt exists
        seed: sampling seed for --metric
        device: device for evaluation (training follows the YAML trainer)
        trust_checkpoint: load row checkpoints holding pickled Python objects (can run code; only files you trust)
        ckpt: sampler-zoo specs (kind: sampler_zoo): the checkpoint to evaluate
        metrics: with --metric: the metric set logged per row (fid,sfid,is,precision,recall,accuracy)
        overwrite: use an existing non-empty --out that is not this study's folder (its row checkpoints are reused)
    """
    from enat_lightning.commands.common import check_device
    from enat_lightning.studies.sampler_zoo import is_zoo_spec

    check_device(device)
    if is_zoo_spec(spec):
        return _run_zoo(spec, out, ckpt, device, num_samples, overwrite)
    study = _study(spec, rows)
    with _claim(_out(study, out), study.name, overwrite) as folder:
        return _run(study, folder, override, set, metric, num_samples, fid_stats, tokenizer, inception, val_limit,
                    retrain, seed, device, trust_checkpoint, metrics)


def _claim(folder: Path, name: str, overwrite: bool):
    """The output rule (fileio.claim_output) for a study folder: rerun to resume; a non-empty folder of another study
    or of anything else is refused unless --overwrite; a second concurrent run into it is refused."""
    from enat_lightning.fileio import claim_output

    return claim_output(folder, overwrite=overwrite, folder=True, made_by={"command": "enat study run", "study": name})


def _run(study, folder, override, set, metric, num_samples, fid_stats, tokenizer, inception, val_limit, retrain, seed,
         device, trust_checkpoint, metrics) -> list[dict]:
    from enat_lightning.studies.study import run_study, sample_quality_metric

    sample_metric = None
    if metric != "none":
        # each row passes its own SamplerSettings (study/row `sampling`) to the metric
        sample_metric = sample_quality_metric(metric, num_samples=num_samples or 1000, seed=seed,
                                              fid_stats=str(fid_stats) if fid_stats else None, tokenizer=tokenizer,
                                              feature=str(inception) if inception else None, device=device,
                                              metrics=metrics)
    results = run_study(study, folder, overrides=[Path(o) for o in override or []], sets=list(set or []),
                        sample_metric=sample_metric, val_limit=val_limit, retrain=retrain, device=device,
                        trust_checkpoint=trust_checkpoint)
    print((folder / "results.md").read_text())
    print(f"wrote {folder / 'results.md'} and {folder / 'results.csv'} ({len(results)} rows)")
    return results


def _run_zoo(spec: Path, out: Optional[Path], ckpt: Optional[Path], device: str, num_samples: Optional[int],
             overwrite: bool = False):
    from enat_lightning.studies.sampler_zoo import load_zoo, run_zoo

    zoo = load_zoo(spec)
    with _claim(Path(out) if out else Path("runs") / "studies" / zoo.name, zoo.name, overwrite) as folder:
        rows = run_zoo(zoo, folder, ckpt=ckpt, device=device,
                       overrides={"num_samples": num_samples} if num_samples else None)
    print((folder / "results.md").read_text())
    print(f"wrote {folder / 'results.md'}, {folder / 'results.csv'}, {folder / 'fid_vs_gflops.png'}")
    return rows


plan.positional = run.positional = True  # `enat study run SPEC`: the spec is positional
