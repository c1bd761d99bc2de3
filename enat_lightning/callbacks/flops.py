"""GFLOPsCallback: the generation cost of the model being trained, in the paper's convention.

At fit start it counts one generation (``evaluation.flops.count_generation``, meta device: no
memory, seconds) with the configured sampler settings, logs the totals and stores them in the
module's hyper-parameters, so every checkpoint carries ``hyper_parameters["flops"]``.
"""
from __future__ import annotations

import lightning.pytorch as pl

from enat_lightning.evaluation.flops import DEFAULT_VQ, count_generation


class GFLOPsCallback(pl.Callback):
    def __init__(self, steps: int = 8, reuse: bool = True, schedule: str = "cosine", guided: bool = True,
                 vq: str | None = DEFAULT_VQ, prefix: str = "flops"):
        super().__init__()
        self.steps, self.reuse, self.schedule, self.guided, self.vq, self.prefix = steps, reuse, schedule, guided, vq, prefix
        self.summary: dict | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        cfg = pl_module.cfg
        rep = count_generation(cfg, self.steps, reuse=self.reuse and cfg.supports_reuse,
                               schedule=self.schedule, guided=self.guided, vq=self.vq)
        self.summary = {"steps": self.steps, "reuse": rep.reuse, "schedule": self.schedule,
                        "gmacs_total": rep.gmacs_total, "gmacs_actual": rep.gmacs_actual,
                        "gmacs_vq_decoder": rep.gmacs_vq_decoder, "tflops_paper": rep.tflops_paper,
                        "convention": "MACs per image, all steps, cond+uncond passes"}
        pl_module.hparams["flops"] = self.summary
        metrics = {f"{self.prefix}/{k}": float(self.summary[k])
                   for k in ("gmacs_total", "gmacs_actual", "gmacs_vq_decoder", "tflops_paper")}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.summary is not None:
            checkpoint.setdefault("hyper_parameters", {})["flops"] = self.summary
