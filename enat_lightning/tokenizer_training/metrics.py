"""Codebook usage and perplexity counted over a whole validation epoch, summed across ranks.

Per-batch usage depends on the batch size (64 tokens cannot use 256 codes), so the module accumulates a
histogram of ids over every validation batch (a torchmetrics ``Metric`` with a ``sum`` reduction, so DDP
ranks are all-reduced) and reports usage and perplexity of the epoch's histogram.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """counts (V,) of each id -> usage (fraction of codes used at least once) and perplexity
    exp(H(p)), p = counts / sum (V when every code is equally frequent, 1 when one code takes all)."""
    counts = counts.double()
    total = counts.sum()
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0, "used_codes": 0}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).double().mean()), "perplexity": float(entropy.exp()),
            "used_codes": int((counts > 0).sum())}


class CodebookUsage(Metric):
    """Histogram of token ids; ``compute()`` -> ``codebook_stats`` of everything seen since ``reset``."""

    full_state_update = False

    def __init__(self, codebook_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.add_state("counts", default=torch.zeros(codebook_size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, ids: torch.Tensor) -> None:
        self.counts += torch.bincount(ids.flatten().long(), minlength=self.codebook_size)[: self.codebook_size]

    def compute(self) -> dict[str, float]:
        return codebook_stats(self.counts)
