"""Training throughput and MFU through Lightning's ``ThroughputMonitor``.

TensorBoard tags (global, all processes together): ``samples/s``, ``tokens/s`` (samples x L),
``tflops/s`` (model FLOPs: forward + backward + the reuse teacher's forward) and ``mfu`` (model
FLOP/s per device / the device's peak). The FLOPs per sample are counted once on the meta device
(``training_flops_per_sample``: no memory, no arithmetic). The peak comes from ``peak_flops`` if
given, else from Lightning's table of GPUs for the run's precision (``get_available_flops``); on
the CPU there is no such table, so ``mfu`` is not logged there unless ``peak_flops`` is set.

Unlike the stock monitor, which calls ``torch.cuda.synchronize()`` after every batch, this one
reads the clock (and synchronises) only on logging steps (``trainer.log_every_n_steps``): rates are
measured between consecutive logging steps, and the other steps run without a host stall.
"""
from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from enat_lightning.masking import apply_mask, sample_mask, sample_reuse_mask

MEAN_MASK_RATIO = 0.8  # mean of the recipe's Beta(12, 3) mask ratio


def training_flops_per_sample(cfg, reuse_prob: float, mask_ratio: float = MEAN_MASK_RATIO) -> float:
    """Model FLOPs of one training sample (2 per multiply-accumulate, as Lightning's MFU expects):
    online forward + backward at ``mask_ratio``, plus, with probability ``reuse_prob``, the EMA
    teacher's forward on the reuse mask and the online network's reuse path. Meta device."""
    from enat_lightning.evaluation.flops import build_meta

    net = build_meta(cfg)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.codebook_size, (1, cfg.seq_len), generator=g)
    labels = torch.zeros(1, dtype=torch.long)
    masking = sample_mask(tokens, mask_ratio, g)  # (1, L) real CPU: the network sees real counts
    ids = apply_mask(tokens, masking, cfg.mask_id)
    # Fig. 2 variants mask dense attention with a real CPU tensor that cannot meet meta activations;
    # the masked attention costs the same MACs as the full one (as in evaluation/flops.py)
    kw = {"attention_removal": "none"} if getattr(cfg, "attention_removal", "none") != "none" else {}
    # the counter counts matrix products only: the loss itself adds nothing, its backward everything
    loss = lambda out: out.logits.sum()  # noqa: E731
    plain = measure_flops(net, lambda: net(ids, labels, logits_at="masked", **kw), loss)
    if reuse_prob <= 0 or not hasattr(net, "reuse_proj"):
        return float(plain)
    prev_ids = apply_mask(tokens, sample_reuse_mask(masking, g), cfg.mask_id)
    with torch.no_grad():  # the teacher pass as ENATModule runs it: features only
        teacher_kw = dict(logits_at="none", decode=net.reuse_reads_masked, **kw)
        teacher = measure_flops(net, lambda: net(prev_ids, labels, **teacher_kw))
        prev = net(prev_ids, labels, **teacher_kw)
    reuse = measure_flops(net, lambda: net(ids, labels, prev=prev, logits_at="masked", **kw), loss)
    return float((1 - reuse_prob) * plain + reuse_prob * (reuse + teacher))


class TrainingThroughput(ThroughputMonitor):
    """``ThroughputMonitor`` for ENAT batches, logging ``samples/s``, ``tokens/s``, ``tflops/s``, ``mfu``.

    peak_flops: the device's peak FLOP/s for MFU (default: Lightning's GPU table; none on CPU).
    The module supplies ``flops_per_batch`` (``ENATModule`` counts it at the start of fit).
    """

    def __init__(self, peak_flops: float | None = None):
        super().__init__(batch_size_fn=lambda batch: int(batch["tokens"].shape[0]),
                         length_fn=lambda batch: int(batch["tokens"].numel()), window_size=2)
        self.peak_flops = peak_flops
        self._flops_since_update = 0.0  # model FLOPs per device since the last window point
        self._val_t0 = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops is not None:
            self.available_flops = self.peak_flops
            for tp in self._throughputs.values():
                tp.available_flops = self.peak_flops
        elif self.available_flops is None and stage == "fit":
            rank_zero_info(f"TrainingThroughput: no peak FLOP/s known for {trainer.strategy.root_device}; mfu is "
                           "not logged (set peak_flops to log it)")

    # -- only on logging steps: the clock read needs a device sync on GPU -----------------------------
    @rank_zero_only
    def on_train_start(self, trainer, *_) -> None:
        super().on_train_start(trainer)
        # the window's first point: the start of training, so the first logging step has a rate
        self._throughputs[RunningStage.TRAINING].update(time=0.0, batches=0, samples=0, lengths=0, flops=0)
        self._flops_since_update = 0.0

    @torch.inference_mode()
    def _update(self, trainer, pl_module, batch, iter_num: int) -> None:
        stage = trainer.state.stage
        self._lengths[stage] += self.length_fn(batch)
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        flops = getattr(pl_module, "flops_per_batch", None)
        self._flops_since_update += flops or 0.0
        if not trainer._logger_connector.should_update_logs:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the finished step
        self._throughputs[stage].update(time=time.perf_counter() - self._t0s[stage], batches=self._batches[stage],
                                        samples=self._samples[stage], lengths=self._lengths[stage],
                                        flops=self._flops_since_update if flops is not None else None)
        self._flops_since_update = 0.0

    # validation inside fit: its wall time is not training time
    @rank_zero_only
    def on_validation_start(self, trainer, *_) -> None:
        self._val_t0 = time.perf_counter()

    @rank_zero_only
    def on_validation_end(self, trainer, *_) -> None:
        if not trainer.sanity_checking and RunningStage.TRAINING in self._t0s:
            self._t0s[RunningStage.TRAINING] += time.perf_counter() - self._val_t0

    def _compute(self, trainer, iter_num: int | None = None) -> None:
        if not trainer._logger_connector.should_update_logs:
            return
        stage = trainer.state.stage
        if stage != RunningStage.TRAINING:  # validation / test throughput: not ours to report
            return
        m = self._throughputs[stage].compute()
        world = trainer.world_size
        metrics = {}
        if "device/samples_per_sec" in m:
            metrics["samples/s"] = m["device/samples_per_sec"] * world
        if "device/items_per_sec" in m:
            metrics["tokens/s"] = m["device/items_per_sec"] * world
        if "device/flops_per_sec" in m:
            metrics["tflops/s"] = m["device/flops_per_sec"] * world / 1e12
        if "device/mfu" in m:
            metrics["mfu"] = m["device/mfu"]
        if metrics:
            trainer._logger_connector.log_metrics(metrics, step=iter_num)
            for k, v in metrics.items():  # also in callback_metrics, like self.log'd values
                trainer.callback_metrics[k] = torch.tensor(float(v))

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, *_) -> None:
        self._update(trainer, pl_module, batch, trainer.fit_loop.total_batch_idx + 1)
        if not trainer.fit_loop._should_accumulate():
            self._compute(trainer)

    # validation / test / predict: counted by the stock monitor; not logged here
    def on_validation_batch_end(self, *args, **kwargs) -> None:
        return

    def on_test_batch_end(self, *args, **kwargs) -> None:
        return

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        return

