"""Fully sharded training (FSDP2, ``torch.distributed.fsdp.fully_shard``) for ENATModule.

Used through Lightning's ``ModelParallelStrategy`` (``experiments/strategy/fsdp.yaml``): Lightning
builds the device mesh and calls ``ENATModule.configure_model``, which calls ``shard_module``.

What is sharded: every transformer block of the online network and of the EMA copy is its own
FSDP2 unit (parameters, gradients and AdamW states split over the data-parallel ranks, gathered
one block at a time for its forward / backward); the rest of each network (embeddings, output
head, reuse projection, final norm) forms the network's root unit. The online network and the EMA
are sharded identically, so the EMA update is a shard-local lerp (no communication). Checkpoints
are distributed (one file per rank + metadata, a folder): resume with ``--ckpt_path`` on the same
strategy, or consolidate into one file for sampling (``enat sample --ckpt FILE.consolidated``):
    python -m lightning.fabric.utilities.consolidate_checkpoint path/to/epoch=0-step=N.ckpt
(``lightning.pytorch.utilities.consolidate_checkpoint`` reads only FSDPStrategy checkpoints.)
"""
from __future__ import annotations

from torch import nn


def transformer_blocks(net: nn.Module) -> list[nn.Module]:
    """The blocks of an ENAT (encoder + decoder) or NAT (blocks): the units FSDP2 gathers one at a time."""
    blocks = [*getattr(net, "encoder", []), *getattr(net, "decoder", []), *getattr(net, "blocks", [])]
    if not blocks:
        raise TypeError(f"{type(net).__name__} has no encoder/decoder/blocks to shard")
    return blocks


def shard_module(module: nn.Module, mesh, *, reshard_after_forward: bool = True) -> None:
    """Applies ``fully_shard`` to the online network and the EMA network (``module.ema_net``, inside
    its ``AveragedModel``): each block, then each network."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    ema = getattr(module, "ema_net", module.ema)
    for net in (module.net, ema):
        if isinstance(net, FSDPModule):  # configure_model may run again (e.g. validate after fit)
            continue
        for block in transformer_blocks(net):
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(net, mesh=mesh, reshard_after_forward=reshard_after_forward)
    # The EMA runs forward only (the no-grad reuse teacher, evaluation): FSDP2 keeps a root unit's
    # parameters gathered after forward (for the backward that never comes); free them, so the
    # EMA update sees the same shards as the online network's.
    if not getattr(ema, "_enat_reshard_hook", False):
        ema.register_forward_hook(lambda mod, inputs, output: mod.reshard())
        ema._enat_reshard_hook = True


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(module, "net", None), FSDPModule)


def _strategy_base():
    from lightning.pytorch.strategies import ModelParallelStrategy

    return ModelParallelStrategy


class FSDP2Strategy(_strategy_base()):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP2: one data-parallel mesh over every process
    (``data_parallel_size`` = world size, no tensor parallelism), so a YAML needs no world size.
    ``save_distributed_checkpoint``: True -> a checkpoint folder (one shard file per rank, no gather);
    False -> one file gathered on rank 0 (what `enat sample` reads directly; memory of the full model)."""

    def __init__(self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process shards the model
        super().setup_environment()


# -- memory per GPU, from a config (docs/scaling.md) -------------------------------------------------
ACT_BYTES_PER_TOKEN_LAYER = 34  # x width: saved 16-bit activations of a transformer layer for backward
# (Korthikanti et al. 2022, "Reducing activation recomputation", 34*s*b*h per layer without the
# s^2 attention term, which SDPA's flash / memory-efficient kernels do not store). An estimate.


def training_memory(cfg, batch_per_gpu: int, gpus: int, *, sharded: bool, mask_ratio: float = 0.8) -> dict:
    """Bytes per GPU of a bf16-mixed training step: fp32 weights, grads, AdamW moments and EMA
    (sharded: divided by ``gpus``), and the saved activations (not sharded: data parallel)."""
    from enat_lightning.evaluation.flops import build_meta

    params = sum(p.numel() for p in build_meta(cfg).parameters())
    div = gpus if sharded else 1
    L, D, V = cfg.seq_len, cfg.width, cfg.codebook_size
    masked = round(L * mask_ratio)
    if hasattr(cfg, "enc_depth"):  # ENAT: the encoder sees the visible tokens, the decoder the masked ones
        token_layers = cfg.enc_depth * (L - masked) + cfg.dec_depth * masked
    else:  # NAT: every layer sees all L tokens
        token_layers = cfg.depth * L
    acts = batch_per_gpu * (ACT_BYTES_PER_TOKEN_LAYER * D * token_layers
                            + masked * V * (2 + 4 + 4))  # logits: bf16, fp32 log-softmax and its grad
    out = {"params": params, "weights": 4 * params / div, "grads": 4 * params / div, "adamw": 8 * params / div,
           "ema": 4 * params / div, "activations": acts}
    if sharded:  # FSDP2 gathers one block's bf16/fp32 weights (and its gradient) at a time
        out["gathered_block"] = 2 * 4 * params / max(1, cfg.depth)
    out["total"] = sum(v for k, v in out.items() if k != "params")
    return out
