"""Inference-time attention removal (paper §3, Fig. 2b): a trained NAT is evaluated with one interaction
cut at test time (``NAT.forward(attention_removal=...)``): masked-token validation cross-entropy on fixed
masks (analysis/tokens.py), and optionally a sample-quality metric through a callback (the FID evaluators
live elsewhere).

Imports torch only.
"""
from __future__ import annotations

import torch
from torch import nn

from enat_lightning.errors import InvalidInput
from enat_lightning.models.conditioning import ConditionedNetwork
from enat_lightning.models.config import ATTENTION_REMOVALS

from .report import atomic_write_bytes, markdown_table, write_csv
from .tokens import default_val_shards, load_tokens, masked_token_loss


class AttentionCut(ConditionedNetwork):
    """A NAT that always runs with one interaction cut: a drop-in for the sampler and evaluators.

    Holds the network as a submodule (so ``.parameters()``, ``.eval()``, devices follow it).
    """

    def __init__(self, net: nn.Module, removal: str):
        super().__init__()
        check_removal(net, removal)
        self.net = net
        self.removal = removal
        self.cfg = net.cfg

    def forward(self, ids, labels, prev=None, logits_at: str = "all", *, num_masked: int | None = None):
        return self.net(ids, labels, prev=prev, logits_at=logits_at, attention_removal=self.removal,
                        num_masked=num_masked)

    # the network's conditioning interface (models/conditioning.py), unchanged
    @property
    def conditioner(self):
        return self.net.conditioner

    def condition_blocks(self):
        return self.net.condition_blocks()


def check_removal(net, removal: str) -> None:
    if removal not in ATTENTION_REMOVALS:
        raise InvalidInput(f"--remove {removal!r}: choose from {list(ATTENTION_REMOVALS)} or 'all'")
    if not hasattr(net, "blocks") or getattr(net.cfg, "attention_removal", None) is None:
        raise InvalidInput(f"inference-time attention removal needs a NAT checkpoint (arch 'nat'); got "
                         f"{type(net).__name__}: ENAT has no full self-attention to cut")


def removal_list(spec: str) -> list[str]:
    """'all' -> the four Fig. 2 cuts; else a comma-separated list of ATTENTION_REMOVALS names."""
    if spec == "all":
        return [r for r in ATTENTION_REMOVALS if r != "none"]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in ATTENTION_REMOVALS]
    if bad or not names:
        raise InvalidInput(f"--remove {spec!r}: unknown cut(s) {bad}; choose from {list(ATTENTION_REMOVALS)} or 'all'")
    return names


def removal_study(net, tokens: torch.Tensor, labels: torch.Tensor, removals: list[str], *,
                  sample_metric=None, batch_size: int = 64, seed: int = 0, mask_ratio_beta=(12.0, 3.0),
                  label_smoothing: float = 0.0) -> list[dict]:
    """One row per variant ("none" first, then ``removals``): masked-token loss / accuracy, the loss
    change against the uncut model, and ``sample_metric(model) -> dict`` (e.g. demo-FID) if given."""
    variants = ["none", *[r for r in removals if r != "none"]]
    for r in variants:
        check_removal(net, r)
    rows = []
    for r in variants:
        m = masked_token_loss(net, tokens, labels, removal=r, batch_size=batch_size, seed=seed,
                              mask_ratio_beta=mask_ratio_beta, label_smoothing=label_smoothing)
        row = {"removal": r, "masked_loss": m["loss"], "masked_acc": m["acc"]}
        if sample_metric is not None:
            row.update(sample_metric(AttentionCut(net, r)))
        rows.append(row)
    base = rows[0]["masked_loss"]
    ordered = []
    for row in rows:  # the loss change right after the loss in the table
        first = {k: row.pop(k) for k in ("removal", "masked_loss")}
        ordered.append({**first, "delta_masked_loss": first["masked_loss"] - base, **row})
    return ordered


def analyze_attention_removal(ckpt, out_dir, *, removals: list[str], data: str | None = None,
                              limit: int | None = None, batch_size: int = 64, seed: int = 0,
                              mask_ratio_beta=(12.0, 3.0), sample_metric=None, device: str = "cpu",
                              trust: bool = False) -> list[dict]:
    """`enat analyze attention`: a trained NAT with each interaction cut at inference time ->
    attention_removal.csv / .md (masked-token loss and its change, plus ``sample_metric`` columns)."""
    from pathlib import Path

    from enat_lightning.sampling.checkpoint import load_generator

    net, cfg = load_generator(ckpt, device=device, trust=trust)
    check_removal(net, "none")
    if hasattr(sample_metric, "check"):  # a tokenizer that cannot decode this model: refused before any work
        sample_metric.check(cfg.codebook_size, f"the generator {ckpt}")
    spec = data or default_val_shards(cfg)
    tokens, labels = load_tokens(spec, limit)
    if tokens.shape[1] != cfg.seq_len or int(tokens.max()) >= cfg.codebook_size:
        raise InvalidInput(f"--data {spec}: tokens of length {tokens.shape[1]} with ids up to {int(tokens.max())} "
                         f"do not fit the checkpoint (grid {cfg.grid}, codebook_size {cfg.codebook_size})")
    rows = removal_study(net, tokens, labels, removals, sample_metric=sample_metric, batch_size=batch_size,
                         seed=seed, mask_ratio_beta=mask_ratio_beta)
    out = Path(out_dir)
    write_csv(out / "attention_removal.csv", rows)
    header = (f"Inference-time attention removal (paper Fig. 2) for {ckpt}\n\n"
              f"masked-token cross-entropy on {len(tokens)} samples of {spec}, Beta{tuple(mask_ratio_beta)} mask "
              f"ratio, the same masks for every row.\n\n")
    atomic_write_bytes(out / "attention_removal.md", (header + markdown_table(rows)).encode())
    return rows
