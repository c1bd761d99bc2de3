"""`enat demo`: the end-to-end demo (same as `make demo`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def demo(experiment: Optional[Path] = None, run_dir: Path = Path("runs/demo"), eval_samples: Optional[int] = None,
         feature: Optional[str] = None, seeds: int = 1, lightning_args: Optional[list[str]] = None) -> dict:
    """Train, sample and evaluate a tiny ENAT on real MNIST digits; FID with the real Inception-v3 (CPU, minutes).

    Args:
        experiment: training config (also `-c CONFIG.yaml`; default: experiments/demo.yaml of the checkout)
        run_dir: run folder (an interrupted demo resumes from its last.ckpt)
        eval_samples: samples per sampler for FID and accuracy (default: the demo's own setting, 500)
        feature: FID network: 'inception' (offline TF Inception-v3, [eval] extra; default), 'inception:PATH' or 'demo'
        seeds: run the whole demo for this many training seeds (run_dir/seed0, seed1, ...) and write the
            seed table run_dir/demo_seeds.md (accuracy and FID spread); 1: the demo itself in run_dir
        lightning_args: extra LightningCLI arguments, also given after `--`, e.g. -- --trainer.max_steps=200
    """
    import dataclasses

    from enat_lightning.demo import pipeline

    settings = pipeline.DemoSettings()  # the demo's sampler settings are tuned on the demo model (demo package)
    if eval_samples is not None:
        settings = dataclasses.replace(settings, eval_samples=eval_samples)
    if feature is not None:
        settings = dataclasses.replace(settings, feature=feature)
    if seeds != 1:
        return pipeline.run_seeds(seeds, experiment or pipeline.REPO_CONFIG, run_dir, settings,
                                  list(lightning_args or []))
    return pipeline.run_demo(experiment or pipeline.REPO_CONFIG, run_dir, settings, list(lightning_args or []))
