"""ENATModule: the training glue around an ENAT/NAT network (paper §3; the official recipe: docs/training.md).

No model math here: masks, labels and the loss come from ``masking.py``; the networks from
``models/``. Shape letters: B batch (per process), L = grid**2 tokens, V codebook size.

training_step reads like the recipe:
  draws for this step (one mask ratio per batch, masks, CFG label drop, reuse coin)
  -> optional reuse pass: the EMA network, eval mode, no_grad, on a superset mask (§3.1)
  -> online forward with that output as ``prev`` -> masked_ce -> logs.

Checkpoint layout (read by ``sampling/checkpoint.py``): ``hyper_parameters["net"]`` is the network
config in the YAML form ``{"class_path": "enat_lightning.models.ENATConfig", "init_args": {...}}``,
online weights under ``net.``, EMA weights under ``ema.module.`` (a ``torch.optim.swa_utils.AveragedModel``;
its update counter is ``ema.n_averaged``). Checkpoints of the older layout (``net`` as ``cfg.to_dict()``,
EMA under ``ema.``) still load: ``on_load_checkpoint`` renames their keys.
"""
from __future__ import annotations

import dataclasses
import lightning.pytorch as pl
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from enat_lightning.masking import (Labels, apply_mask, masked_accuracy, masked_ce, num_masked, random_positions,
                                    sample_mask, sample_mask_ratio, sample_reuse_mask)
from enat_lightning.models import Captions, ENATConfig, NATConfig, NetworkConfig, build_model, config_from_dict
from enat_lightning.errors import InvalidInput
from enat_lightning.lr_schedule import lr_factor, warmup_factor  # noqa: F401  (warmup_factor: public here too)
from enat_lightning.seeding import mix_seed


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf. Caught without a per-step host sync (``finite_check_every_n_steps``)
    and always before a checkpoint is written, so no checkpoint holds an update made after it."""


def net_config_dict(cfg: NetworkConfig) -> dict:
    """The ONE serialised form of a network config, in YAML and in checkpoints alike:
    ``{"class_path": "enat_lightning.models.ENATConfig", "init_args": {field: value, ...}}``."""
    return {"class_path": f"enat_lightning.models.{type(cfg).__name__}", "init_args": dataclasses.asdict(cfg)}


def make_ema(net: nn.Module, decay: float) -> AveragedModel:
    """The EMA copy: ``AveragedModel`` with the EMA rule ema <- decay * ema + (1 - decay) * online.

    It starts as a copy of ``net``'s initial weights counted as one average (``n_averaged = 1``), so
    the first update already blends (the official recipe) instead of AveragedModel's default copy.
    Buffers are copied from the online network after each update (``update_ema``), not averaged.
    """
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    ema.n_averaged.fill_(1)
    return ema.requires_grad_(False).eval()


@torch.no_grad()
def update_ema(ema: AveragedModel, online: nn.Module) -> None:
    """One EMA step of the parameters (AveragedModel) and a copy of the buffers."""
    ema.update_parameters(online)
    for eb, ob in zip(ema.module.buffers(), online.buffers()):
        eb.copy_(ob)


def attached_trainer(module: pl.LightningModule) -> "pl.Trainer | None":
    """The module's trainer, or None when it is not attached to one (tests calling a step directly).
    Lightning's public ``trainer`` property raises in that case; nothing private is read."""
    try:
        return module.trainer
    except RuntimeError:
        return None


class ENATModule(pl.LightningModule):
    """Trains ``net`` with the official ENAT recipe; keeps an EMA copy that samples and teaches.

    net:              the network config: a config object, or its dict form (``class_path:
                      enat_lightning.models.ENATConfig`` / ``NATConfig`` + ``init_args``, as in YAML and
                      checkpoints; the older ``cfg.to_dict()`` form is read too)
    lr, betas, weight_decay, warmup_steps: AdamW and linear warm-up, then constant
    lr_decay_steps, min_lr_ratio: 0 (official): constant after the warm-up; else a cosine decay to
                      ``min_lr_ratio * lr`` at step ``lr_decay_steps`` (``lr_factor``)
    ema_decay:        EMA rate, updated after every optimizer step
    label_smoothing:  of the masked-token cross-entropy
    mask_ratio_beta:  (a, b) of the Beta distribution of the per-batch mask ratio
    p_uncond:         dataset-level null-label probability (the network's ``class_dropout_prob``
                      stacks on top, see ``masking.prepare_labels``)
    reuse_prob:       probability of a reuse-aware step (0 for the "w/o reuse" ablations)
    recipe_seed:      seeds every draw of the recipe (masks, label drops, reuse coin) with the step
    compile:          ``torch.compile`` the online network (opt-in; same numbers, faster on GPU)
    finite_check_every_n_steps: how often the loss's finiteness is read on the host (a device sync);
                      a non-finite loss is also caught before every checkpoint save, so none holds
                      a bad update (see ``_stop_if_not_finite``)
    """

    def __init__(self, net: NetworkConfig = ENATConfig(), lr: float = 4e-4,
                 betas: tuple[float, float] = (0.99, 0.99), weight_decay: float = 0.03, warmup_steps: int = 5000,
                 ema_decay: float = 0.9999, label_smoothing: float = 0.1,
                 mask_ratio_beta: tuple[float, float] = (12.0, 3.0), p_uncond: float = 0.15,
                 reuse_prob: float = 0.5, recipe_seed: int = 1234, compile: bool = False,
                 finite_check_every_n_steps: int = 100, lr_decay_steps: int = 0, min_lr_ratio: float = 0.0):
        super().__init__()
        cfg = config_from_dict(net) if isinstance(net, dict) else net
        if not isinstance(cfg, (ENATConfig, NATConfig)):
            raise TypeError(f"model.net must be an ENATConfig or NATConfig, got {type(net).__name__}")
        _check_fraction("model.reuse_prob", reuse_prob)
        _check_fraction("model.p_uncond", p_uncond)
        _check_fraction("model.ema_decay", ema_decay)
        _check_fraction("model.min_lr_ratio", min_lr_ratio)
        if lr_decay_steps < 0:
            raise InvalidInput(f"model.lr_decay_steps must be >= 0 (0: no decay), got {lr_decay_steps}")
        if reuse_prob > 0 and not cfg.supports_reuse:
            raise InvalidInput(f"model.reuse_prob={reuse_prob}: the NAT baseline has no reuse path; set it to 0")
        self.save_hyperparameters(ignore=["net"])
        # self-describing checkpoint (no architecture flags at load time), in the YAML form
        self.hparams["net"] = net_config_dict(cfg)
        self.cfg = cfg
        self.net = build_model(cfg)
        self.ema = make_ema(self.net, ema_decay)
        if finite_check_every_n_steps < 1:
            raise InvalidInput(f"model.finite_check_every_n_steps must be >= 1, got {finite_check_every_n_steps}")
        if compile:
            self.net.compile()  # in place: parameter names (and checkpoints) stay those of the eager network
        self._bad_loss: torch.Tensor | None = None  # (step, loss) of the first non-finite loss, on the device

    @property
    def ema_net(self) -> nn.Module:
        """The EMA network itself (what sampling and FID use), unwrapped from its AveragedModel."""
        return self.ema.module

    # -- mode: the EMA copy always runs in eval mode (no dropout), also as the reuse teacher -----------
    def train(self, mode: bool = True):
        super().train(mode)
        self.ema.eval()
        return self

    def forward(self, ids, labels, prev=None, logits_at: str = "all", *, num_masked: int | None = None):
        return self.net(ids, labels, prev=prev, logits_at=logits_at, num_masked=num_masked)

    # -- training ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        tokens, labels = self._unpack(batch)
        hp, cfg = self.hparams, self.cfg
        micro = batch_idx % max(1, self.trainer.accumulate_grad_batches)  # micro-batch within the step
        g = self._generator(stream=0, index=micro)
        shard = (self.global_rank, self.trainer.world_size)
        # The mask is drawn on CPU (the draws of sample_mask) and its counts are host ints: the network
        # is told them (num_masked) instead of reading them back from the device at every forward.
        n_masked = num_masked(cfg.seq_len, sample_mask_ratio(g, *hp.mask_ratio_beta))
        masking_cpu = random_positions(tuple(tokens.shape), n_masked, g, shard=shard)  # (B, L) == sample_mask
        masking = masking_cpu.to(tokens.device, non_blocking=True)
        # CFG dropout to the null label / empty caption (class models add class_dropout_prob on top)
        lab = Labels(*self.net.drop_condition(self._condition(batch, labels), hp.p_uncond, g, shard))
        # One coin for all processes, so every rank runs the same graph (no find_unused_parameters).
        reuse = float(torch.rand((), generator=g)) < hp.reuse_prob
        prev, n_prev = None, n_masked
        if reuse:
            prev_mask = sample_reuse_mask(masking_cpu, g, shard)  # (B, L) on CPU
            n_prev = int(prev_mask[0].sum())  # a CPU tensor: no device sync
            prev_ids = apply_mask(tokens, prev_mask.to(tokens.device, non_blocking=True), cfg.mask_id)  # (B, L)
            with torch.no_grad():  # §3.1: stop-gradient; the EMA network is the teacher (features only;
                # no decoder unless the reuse path reads [MASK] features: its output would go unread)
                prev = self.ema(prev_ids, lab.data, logits_at="none", decode=self.net.reuse_reads_masked,
                                num_masked=n_prev)
        # Dropout draws from the global RNG: seed it from (seed, step, rank) so a resumed run repeats them.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(mix_seed(hp.recipe_seed, 3, self.global_step, micro, self.global_rank))
            out = self.net(apply_mask(tokens, masking, cfg.mask_id), lab.net, prev=prev, logits_at="masked",
                           num_masked=n_masked)
        loss = masked_ce(out.logits, tokens, masking, hp.label_smoothing, num_masked=n_masked)  # logits (B, Lm, V)
        self._note_if_not_finite(loss)
        if self.global_step % hp.finite_check_every_n_steps == 0:
            self._stop_if_not_finite("before backward")
        L = cfg.seq_len
        loss = loss + self._touch_idle_params(reuse, context=n_prev < L, new_tokens=n_prev > n_masked)
        self.log("train/loss", loss, prog_bar=True)
        if self._logging_step():  # an argmax over (B, Lm, V): only where the value is logged
            self.log("train/acc", masked_accuracy(out.logits.detach(), tokens, masking, num_masked=n_masked))
        self.log("train/mask_ratio", n_masked / L)
        self.log("train/reuse", float(reuse))
        skipped = getattr(getattr(self.trainer, "datamodule", None), "skipped_samples", None)
        if skipped:  # bad samples dropped under data.skip_bad_samples (no always-zero card in TensorBoard)
            self.log("data/skipped_samples", float(skipped))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        update_ema(self.ema, self.net)

    def on_before_optimizer_step(self, optimizer) -> None:
        # After AMP unscaling and before clipping (Trainer.gradient_clip_val): the raw update size,
        # on logging steps only. torch's get_total_norm (foreach norms, as clip_grad_norm_) rather
        # than Lightning's grad_norm, which builds a per-parameter dict of norms (~2% of a CPU step).
        if self._logging_step():
            grads = [p.grad for p in self.net.parameters() if p.grad is not None]
            if grads:
                total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
                if self.device_mesh is not None:  # FSDP2: a DTensor; the norm of the whole gradient
                    total = total.full_tensor()
                self.log("grad_norm", total)

    def on_after_backward(self) -> None:
        # Sharded (FSDP2): the parameters idle on this step get an exact-zero gradient, as
        # _touch_idle_params gives them under DDP, so AdamW keeps a state for every parameter (the
        # sharded optimizer checkpoint then always has every key) and both strategies compute the same.
        if self.device_mesh is not None:
            for p in self.net.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)

    def configure_model(self) -> None:
        # Lightning's ModelParallelStrategy (experiments/strategy/fsdp.yaml) gives a device mesh:
        # shard the online network and the EMA with FSDP2 (enat_lightning/sharding.py).
        if self.device_mesh is not None:
            from enat_lightning.sharding import shard_module

            mesh = self.device_mesh
            shard_module(self, mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh)

    def configure_callbacks(self):
        """Throughput / MFU (``TrainingThroughput``) and the learning rate (``LearningRateMonitor``,
        tag ``lr``), unless the trainer's callbacks already have them."""
        from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor

        from enat_lightning.callbacks.throughput import TrainingThroughput

        trainer = attached_trainer(self)
        have = trainer.callbacks if trainer is not None else []
        extra = []
        if not any(isinstance(c, (ThroughputMonitor, TrainingThroughput)) for c in have):
            extra.append(TrainingThroughput())
        if trainer is not None and trainer.loggers and not any(isinstance(c, LearningRateMonitor)
                                                                           for c in have):
            extra.append(LearningRateMonitor(logging_interval="step"))
        return extra

    # -- evaluation: online and EMA networks on masks fixed by the batch index ---------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_step(self, batch: dict, batch_idx: int, prefix: str) -> None:
        tokens, labels = self._unpack(batch)
        g = torch.Generator().manual_seed(mix_seed(self.hparams.recipe_seed, 1 if prefix == "val" else 2, batch_idx, 0))
        shard = (self.global_rank, self.trainer.world_size)
        masking = sample_mask(tokens, sample_mask_ratio(g, *self.hparams.mask_ratio_beta), g, shard)
        ids = apply_mask(tokens, masking, self.cfg.mask_id)
        cond = self._condition(batch, labels)
        for name, net in (("", self.net), ("ema_", self.ema)):
            logits = net(ids, cond, logits_at="masked").logits  # (B, Lm, V)
            self.log(f"{prefix}/{name}loss", masked_ce(logits, tokens, masking, self.hparams.label_smoothing),
                     sync_dist=True, prog_bar=not name)
            self.log(f"{prefix}/{name}acc", masked_accuracy(logits, tokens, masking), sync_dist=True)

    # -- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay,
                                **adamw_implementation(self.device))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self._lr_factor(step))
        # "name": the tag LearningRateMonitor logs the learning rate under
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        upgrade_checkpoint(checkpoint)

    def on_train_start(self) -> None:
        # Resuming restores the optimizer and scheduler states, and with them the checkpoint's lr, betas
        # and weight decay: re-apply the configured values, so the config (and the command line) wins.
        hp = self.hparams
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group.update(betas=tuple(hp.betas), weight_decay=hp.weight_decay, initial_lr=hp.lr)
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            sched.base_lrs = [hp.lr] * len(sched.base_lrs)
            for group in sched.optimizer.param_groups:
                group["lr"] = hp.lr * self._lr_factor(sched.last_epoch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._stop_if_not_finite("before saving a checkpoint")  # raising here writes nothing
        if getattr(self, "text_encoder_identity", None):  # which encoder made the captions it learned from
            checkpoint["text_encoder"] = self.text_encoder_identity

    def on_train_end(self) -> None:
        self._stop_if_not_finite("at the end of training")

    def setup(self, stage: str) -> None:
        # the data module was given grid / codebook_size / num_classes by the network and checked its
        # shards in its own setup (training_cli.py links them): no second check here
        trainer = attached_trainer(self)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and self.cfg.condition == "text" and hasattr(dm, "manifest"):
            from enat_lightning.data.coco import configure_text_model  # shard text info + null caption

            text = dm.manifest("train").text
            for net in (self.net, self.ema.module):
                configure_text_model(net, text, "train shards")
            self.text_encoder_identity = (text or {}).get("identity")  # saved in checkpoints (on_save_checkpoint)

    # -- helpers ----------------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        hp = self.hparams  # .get: checkpoints from before the decay option have neither key
        return lr_factor(step, hp.warmup_steps, hp.get("lr_decay_steps", 0), hp.get("min_lr_ratio", 0.0))

    def _unpack(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, dict) or "tokens" not in batch or "label" not in batch:
            got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"a training batch must be a dict with 'tokens' (B, L) and 'label' (B,); got {got}")
        tokens, labels = batch["tokens"], batch["label"]  # (B, L), (B,): shapes checked where data enters
        return tokens.long(), labels.long().reshape(-1)

    def _condition(self, batch: dict, labels: torch.Tensor):
        """The batch's raw condition: class labels, or for text models ``Captions`` from batch "text"
        (B, T, Dt) and "text_mask" (B, T)."""
        if self.cfg.condition != "text":
            return labels
        if "text" not in batch or "text_mask" not in batch:
            raise ValueError(f"a text model (condition: text) needs 'text' and 'text_mask' in the batch; got "
                             f"{sorted(batch)}: are these text shards (enat tokenize coco)?")
        return Captions(batch["text"].float(), batch["text_mask"].bool())

    def _generator(self, stream: int, index: int) -> torch.Generator:
        """The step's generator: a function of (seed, step), so resuming repeats the same draws."""
        return torch.Generator().manual_seed(mix_seed(self.hparams.recipe_seed, stream, self.global_step, index))

    def _logging_step(self) -> bool:
        """Whether this training step's on-step logs reach the logger (Trainer.log_every_n_steps);
        a module without a fitting trainer (tests calling training_step directly) logs always."""
        trainer = attached_trainer(self)
        # before the optimizer step: the step being computed is global_step + 1 (public state only)
        return trainer is None or (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0

    def _touch_idle_params(self, reuse: bool, context: bool = True, new_tokens: bool = True) -> torch.Tensor:
        """0 * (one element of every parameter this step leaves idle), added to the loss.

        Some parameters are idle on some steps: the reuse projection and the encoders' context K/V
        (``kv.A``) without reuse, and the whole encoder on a reuse step that reveals no new token
        (k = 0); ``ENAT.idle_parameters`` names them for the step's path. DDP without
        ``find_unused_parameters`` needs every parameter in the graph, so these get an exact-zero
        gradient instead of none; touching only the idle ones (not every encoder parameter) spares
        a zero-filled gradient of the whole encoder per step. Side effect: on such steps AdamW sees
        a zero gradient instead of skipping them (moments decay, weight decay applies), where the
        official code ran DDP with ``find_unused_parameters=True``.
        """
        if not self.net.supports_reuse:  # NAT: every parameter is used on every step
            return torch.zeros((), device=self.device)
        if self.device_mesh is not None:  # FSDP2 (sharded DTensors): zero gradients in on_after_backward
            return torch.zeros((), device=self.device)
        params = self.net.idle_parameters(reuse, context=context, new_tokens=new_tokens)
        if not params:
            return torch.zeros((), device=self.device)
        return sum(p.reshape(-1)[:1].sum() for p in params) * 0.0

    # -- finiteness without a host sync per step ---------------------------------------------------------
    def _note_if_not_finite(self, loss: torch.Tensor) -> None:
        """Remembers (step, loss) of the first non-finite loss on the device: no host sync."""
        loss = loss.detach().float()
        if self._bad_loss is None or self._bad_loss.device != loss.device:
            self._bad_loss = torch.full((2,), -1.0, device=loss.device)
        now = torch.stack([torch.full((), float(self.global_step), device=loss.device), loss])
        first = ~torch.isfinite(loss) & (self._bad_loss[0] < 0)
        self._bad_loss = torch.where(first, now, self._bad_loss)

    def _stop_if_not_finite(self, where: str) -> None:
        """Reads the flag on the host (one sync) and stops every rank together if any saw a
        non-finite loss. Runs every ``finite_check_every_n_steps`` steps before backward, and before
        every checkpoint save: updates made after a bad loss may be in memory, never in a checkpoint."""
        bad = self._bad_loss
        finite = bad is None or bool(bad[0] < 0)
        if attached_trainer(self) is not None:  # every rank must stop together, or the others hang in all-reduce
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        what = (f"train/loss is {float(bad[1])} at step {int(bad[0])}" if bad is not None and float(bad[0]) >= 0
                else "train/loss became non-finite on another process")
        raise NonFiniteLossError(
            f"{what} (stopped {where} at step {self.global_step}); no checkpoint holds an update made after it: "
            "the last one written holds the last good weights. Try a lower model.lr, trainer.gradient_clip_val, "
            "or bf16-mixed instead of 16-mixed precision.")


def adamw_implementation(device: torch.device) -> dict:
    """The fastest AdamW kernel for ``device``: fused (one kernel for all parameters) on CUDA and
    CPU (on ENAT-S's parameters 3.4x faster than the per-tensor loop and faster than ``foreach``
    on CPU, docs/performance.md), multi-tensor ``foreach`` elsewhere."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """Brings a checkpoint of the older layout to the current one, in place: EMA weights ``ema.<key>``
    -> ``ema.module.<key>`` (+ ``ema.n_averaged``), ``net`` as ``cfg.to_dict()`` -> the class_path form."""
    sd = checkpoint.get("state_dict", {})
    old = [k for k in sd if k.startswith("ema.") and not k.startswith("ema.module.") and k != "ema.n_averaged"]
    for k in old:
        sd["ema.module." + k[len("ema."):]] = sd.pop(k)
    if old and "ema.n_averaged" not in sd:
        sd["ema.n_averaged"] = torch.tensor(1, dtype=torch.long)
    hp = checkpoint.get("hyper_parameters", {})
    if isinstance(hp.get("net"), dict) and "class_path" not in hp["net"]:
        hp["net"] = net_config_dict(config_from_dict(hp["net"]))
    return checkpoint


def _check_fraction(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{key} must lie in [0, 1], got {value}")
