"""FIDCallback: FID, sFID, IS, precision, recall (/ demo accuracy) of EMA samples every N steps and at
the end of fit (the selected metric set).

The math is ``enat_lightning.evaluation.evaluate`` (tested without a Trainer); this callback only
decides when, picks the EMA network and logs. Under DDP every rank generates its share of the K
samples (``torch.distributed`` process group of the strategy) and features are gathered, so the
result does not depend on the number of devices.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch

from enat_lightning.evaluation import evaluate, load_feature_extractor
from enat_lightning.sampling.settings import SamplerSettings, as_settings
from enat_lightning.errors import InvalidInput

METRIC_KEYS = ("fid", "sfid", "is_mean", "is_std", "precision", "recall", "accuracy")


class FIDCallback(pl.Callback):
    """Args:
        ref_stats:     reference ``.npz`` (mu, sigma) made with the same feature network; None -> IS only;
                       'demo:val' / 'demo:train' / 'demo:digits:val' -> those real digits under ``feature``
        feature:       'inception' (offline, [eval] extra), 'inception:PATH' (local pt_inception-2015-12-05
                       weights: FID and IS), 'demo', 'demo:digits' or 'demo:PATH' (demo classifier)
        tokenizer:     decodes tokens to pixels: {class_path: ..., init_args: {...}} or an alias ('demo',
                       'demo:PATH', a tokenizer checkpoint path); its codebook_size must be the model's
        every_n_steps: evaluate when global_step is a multiple of this (0: only at the end)
        num_samples:   K samples per evaluation (per-class balanced labels by default)
        sampler:       the ``SamplerSettings`` (YAML ``sampler: {cfg_scale: 3.0}``; omitted = the defaults)
        seed:          the same seed at every evaluation, so curves compare like with like
        use_ema:       sample with ``pl_module.ema_net`` when the module has one
        prefix:        metric names are ``{prefix}/fid`` etc.
        prompts_from:  text models: `enat tokenize coco` val shards; sample i is conditioned on the i-th caption
                       (the FID-30K protocol of ``enat evaluate --prompts_from``, in miniature)
        metrics:       the metric set, e.g. [fid, precision, recall] or "fid,is" (default: every metric the feature
                       network and the reference allow: sFID needs the Inception-v3 and mu_s/sigma_s; precision /
                       recall need reference images -- arr_0 of an `enat fid-stats` / ADM file, or the demo digits)
    """

    def __init__(self, ref_stats: str | None = None, feature: str = "demo", tokenizer: str | dict = "demo",
                 every_n_steps: int = 0, num_samples: int = 1000, sampler: SamplerSettings | None = None,
                 per_class_balanced: bool = True, seed: int = 0, batch_size: int = 64, is_splits: int = 10,
                 at_fit_end: bool = True, use_ema: bool = True, prefix: str = "eval",
                 prompts_from: str | None = None, metrics: list[str] | str | None = None):
        super().__init__()
        from enat_lightning.evaluation.metrics import parse_metrics

        self.metrics = parse_metrics(metrics)  # a bad name fails when the config is read
        if every_n_steps < 0 or num_samples < 1:
            raise InvalidInput(f"FIDCallback: every_n_steps must be >= 0 and num_samples >= 1, got "
                             f"{every_n_steps}, {num_samples}")
        self.ref_stats, self.feature, self.tokenizer_spec = ref_stats, feature, tokenizer
        self.every_n_steps, self.num_samples, self.at_fit_end = every_n_steps, num_samples, at_fit_end
        self.settings = as_settings(sampler)
        self.per_class_balanced, self.seed, self.batch_size = per_class_balanced, seed, batch_size
        self.is_splits, self.use_ema, self.prefix = is_splits, use_ema, prefix
        self.prompts_from = prompts_from
        self._captions = None  # text models: the captions of the first num_samples val images, read once
        self.history: list[dict] = []  # one entry per evaluation: step + metrics
        self._ref = self._extractor = self._tokenizer = None
        self._last_step = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Fail at the start of fit, not hours later: missing weights / stats files raise here.
        if stage != "fit":
            return
        text_model = getattr(pl_module.cfg, "condition", "class") == "text"
        if text_model != (self.prompts_from is not None):
            raise InvalidInput("FIDCallback: a text model (condition: text) samples captions: set init_args.prompts_from "
                             "to val text shards (`enat tokenize coco`)" if text_model else
                             "FIDCallback: prompts_from is for text models (condition: text); class models sample labels")
        from enat_lightning.tokenizers import check_codebook_size, load_tokenizer

        from enat_lightning.evaluation.reference_batch import load_reference_spec

        self._extractor = load_feature_extractor(self.feature, device=pl_module.device)
        # 'demo:val' etc.: the demo digits under this extractor, computed on the fly; else an .npz file (ADM
        # layout; its arr_0 images only when precision / recall are logged)
        pr = bool({"precision", "recall"} & set(self.metrics))
        self._ref = load_reference_spec(self.ref_stats, self._extractor, images=pr) if self.ref_stats else None
        self._tokenizer = load_tokenizer(self.tokenizer_spec)
        check_codebook_size(self._tokenizer, pl_module.cfg.codebook_size, "model.net.init_args",
                            f"FIDCallback tokenizer ({self._tokenizer.identity().get('kind')})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.run(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.at_fit_end and trainer.global_step != self._last_step:
            self.run(trainer, pl_module)

    @torch.no_grad()
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        if self._extractor is None:
            self.setup(trainer, pl_module, "fit")
        net = pl_module.ema_net if self.use_ema and hasattr(pl_module, "ema_net") else pl_module.net
        device = next(net.parameters()).device
        tok = self._tokenizer.to(device) if hasattr(self._tokenizer, "to") else self._tokenizer
        if hasattr(self._extractor, "net"):
            self._extractor.net.to(device)
            self._extractor.device = device
        if self.prompts_from is not None and self._captions is None:
            from enat_lightning.data.coco import eval_captions

            self._captions = eval_captions(net, self.prompts_from, self.num_samples, seed=self.seed)
        res = evaluate(net, tok, self._extractor, num_samples=self.num_samples, ref=self._ref, settings=self.settings,
                       per_class_balanced=self.per_class_balanced, seed=self.seed, batch_size=self.batch_size,
                       is_splits=self.is_splits, conditions=self._captions, metrics=self.metrics)
        metrics = {f"{self.prefix}/{k}": float(res[k]) for k in METRIC_KEYS if k in res}
        step = trainer.global_step
        self._last_step = step
        self.history.append({"step": step, **metrics})
        for k, v in metrics.items():  # visible to ModelCheckpoint(monitor="eval/fid") and EarlyStopping
            trainer.callback_metrics[k] = torch.tensor(v)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        return res
