"""GFLOPsCallback: the generation cost of the model being trained, in the paper's convention.

At fit start it counts one generation (``evaluation.flops.count_generation``, meta device: no
memory, seconds) with the configured sampler settings and logs the totals. The numbers are the
callback's own state (``state_dict``): Lightning saves them under ``checkpoint["callbacks"]``, beside
the module's hyper-parameters, which stay the module's constructor arguments only.
"""
from __future__ import annotations

import lightning.pytorch as pl

from enat_lightning.evaluation.flops import DEFAULT_VQ, count_generation
from enat_lightning.sampling.settings import SamplerSettings, as_settings


class GFLOPsCallback(pl.Callback):
    """sampler: the ``SamplerSettings`` counted (YAML ``sampler: {steps: 8}``; omitted = defaults)."""

    def __init__(self, sampler: SamplerSettings | None = None, vq: str | None = DEFAULT_VQ, prefix: str = "flops"):
        super().__init__()
        self.sampler, self.vq, self.prefix = as_settings(sampler), vq, prefix
        self.summary: dict | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        cfg = pl_module.cfg
        rep = count_generation(cfg, self.sampler, vq=self.vq)
        self.summary = {"steps": rep.steps, "reuse": rep.reuse and cfg.supports_reuse, "schedule": rep.schedule,
                        "gmacs_total": rep.gmacs_total, "gmacs_actual": rep.gmacs_actual,
                        "gmacs_vq_decoder": rep.gmacs_vq_decoder, "tflops_paper": rep.tflops_paper,
                        "convention": "MACs per image, all steps, cond+uncond passes"}
        metrics = {f"{self.prefix}/{k}": float(self.summary[k])
                   for k in ("gmacs_total", "gmacs_actual", "gmacs_vq_decoder", "tflops_paper")}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {} if self.summary is None else {"summary": self.summary}

    def load_state_dict(self, state_dict: dict) -> None:
        self.summary = state_dict.get("summary")
