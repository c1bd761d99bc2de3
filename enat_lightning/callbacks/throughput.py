"""Training throughput and MFU through Lightning's ``ThroughputMonitor``.

TensorBoard tags (global, all processes together): ``samples/s``, ``tokens/s`` (samples x L),
``tflops/s`` (model FLOPs: forward + backward + the reuse teacher's forward) and ``mfu`` (model
FLOP/s per device / the device's peak). The FLOPs per sample are counted once on the meta device
(``training_flops_per_sample``: no memory, no arithmetic). The peak comes from ``peak_flops`` if
given, else from Lightning's table of GPUs for the run's precision (``get_available_flops``); on
the CPU there is no such table, so ``mfu`` is not logged there unless ``peak_flops`` is set.

Unlike the stock ``ThroughputMonitor``, which calls ``torch.cuda.synchronize()`` after every batch,
this one reads the clock (and synchronises) only on logging steps (``trainer.log_every_n_steps``):
rates are measured between consecutive logging steps, and the other steps run without a host
stall. Public Lightning API only: ``Throughput``, ``get_available_flops``, ``pl_module.log_dict``.
"""
from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops, measure_flops
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

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


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the optimizer step that just finished is a logging step (``Trainer.log_every_n_steps``),
    from public trainer state only: call after the step (``on_train_batch_end``)."""
    return trainer.global_step % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop


class TrainingThroughput(Callback):
    """Logs ``samples/s``, ``tokens/s``, ``tflops/s`` and ``mfu`` of ENAT training batches.

    peak_flops: the device's peak FLOP/s for MFU (default: Lightning's GPU table; none on CPU).
    The FLOPs per sample are counted here, once at the start of fit, from the module's network
    config (``training_flops_per_sample``); the module knows nothing of this callback. Built on
    Lightning's public ``Throughput`` (the engine of ``ThroughputMonitor``) and ``pl_module.log``.
    """

    def __init__(self, peak_flops: float | None = None):
        super().__init__()
        self.peak_flops = peak_flops
        self.flops_per_sample: float | None = None
        self.throughput: Throughput | None = None
        self._t0 = self._val_t0 = 0.0
        self._batches = self._samples = self._tokens = 0
        self._flops_since_update = 0.0  # model FLOPs per device since the last window point
        self._last_logged = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        cfg = getattr(pl_module, "cfg", None)
        if cfg is not None and getattr(cfg, "condition", "class") != "text":
            self.flops_per_sample = training_flops_per_sample(cfg, float(pl_module.hparams.get("reuse_prob", 0.0)))
        peak = self.peak_flops
        if peak is None:
            peak = get_available_flops(trainer.strategy.root_device, trainer.precision)
            if peak is None:
                rank_zero_info(f"TrainingThroughput: no peak FLOP/s known for {trainer.strategy.root_device}; mfu "
                               "is not logged (set peak_flops to log it)")
        # window of 2: rates between consecutive logging steps
        self.throughput = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=2)

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._batches = self._samples = self._tokens = 0
        self._flops_since_update = 0.0
        # the window's first point: the start of training, so the first logging step has a rate
        self.throughput.update(time=0.0, batches=0, samples=0, lengths=0, flops=0)

    # validation inside fit: its wall time is not training time
    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.throughput is not None:
            self._t0 += time.perf_counter() - self._val_t0

    @torch.inference_mode()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tokens = batch["tokens"]  # (B, L)
        self._batches += 1
        self._samples += int(tokens.shape[0])
        self._tokens += int(tokens.numel())
        if self.flops_per_sample is not None:
            self._flops_since_update += self.flops_per_sample * int(tokens.shape[0])
        # only on logging steps (once per optimizer step): the clock read needs a device sync on GPU
        if not logs_this_step(trainer) or trainer.global_step == self._last_logged:
            return
        self._last_logged = trainer.global_step
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the finished step
        self.throughput.update(time=time.perf_counter() - self._t0, batches=self._batches, samples=self._samples,
                               lengths=self._tokens,
                               flops=self._flops_since_update if self.flops_per_sample is not None else None)
        self._flops_since_update = 0.0
        m = self.throughput.compute()
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
            pl_module.log_dict({k: float(v) for k, v in metrics.items()}, on_step=True, on_epoch=False,
                               rank_zero_only=True)
