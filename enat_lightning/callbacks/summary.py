"""ModelSummary: Lightning's model summary without its empty FLOPs column, with the project's GFLOPs.

Lightning's summary has a FLOPs column that it fills only when the module sets ``example_input_array``;
ENAT's modules do not (a forward needs a mask count and the sampler's step), so the column reads 0
everywhere, beside the project's own counter. This callback drops the column (and the "Total Flops"
line) when every count is zero, and prints instead what ``GFLOPsCallback`` counts: MACs per generated
image in the paper's convention, with the sampler settings of that callback.

YAML: ``- class_path: enat_lightning.callbacks.summary.ModelSummary`` in ``trainer.callbacks`` (it replaces
Lightning's default summary).
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from lightning.pytorch.utilities.rank_zero import rank_zero_info


class ModelSummary(LightningModelSummary):
    """max_depth: as Lightning's (1: the direct children of the LightningModule)."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth=max_depth, **summarize_kwargs)
        self._generation_line: str | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._generation_line = generation_cost_line(trainer, pl_module)
        super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        columns = dict(summary_data)
        if total_flops == 0 and "FLOPs" in columns:
            rows = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
            rank_zero_info("\n" + format_table(rows, total_parameters, trainable_parameters, model_size,
                                               total_training_modes, self._generation_line))
            return
        super().summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                          total_flops, **summarize_kwargs)


def generation_cost_line(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str | None:
    """'GMACs per image ...' counted as the trainer's GFLOPsCallback counts (None without one)."""
    from enat_lightning.callbacks.flops import GFLOPsCallback
    from enat_lightning.evaluation.flops import count_generation

    cb = next((c for c in trainer.callbacks if isinstance(c, GFLOPsCallback)), None)
    cfg = getattr(pl_module, "cfg", None)
    if cb is None or cfg is None:
        return None
    rep = count_generation(cfg, cb.sampler, vq=cb.vq)
    return (f"{rep.gmacs_total:.4f} GMACs per generated image ({rep.steps} steps, cond + uncond, "
            f"reuse {rep.reuse and cfg.supports_reuse}; the paper's convention, GFLOPsCallback)")


def format_table(rows: list[tuple[str, list[str]]], total: int, trainable: int, size_mb: float,
                 modes: dict[str, int], generation_line: str | None) -> str:
    widths = [max(len(name), *(len(v) for v in values)) if values else len(name) for name, values in rows]
    lines = [" | ".join(name.ljust(w) for (name, _), w in zip(rows, widths))]
    lines.append("-" * len(lines[0]))
    for i in range(len(rows[0][1]) if rows else 0):
        lines.append(" | ".join(values[i].ljust(w) for (_, values), w in zip(rows, widths)))
    lines.append("-" * len(lines[0]))
    lines += [f"{get_human_readable_count(trainable):<10} Trainable params",
              f"{get_human_readable_count(total - trainable):<10} Non-trainable params",
              f"{get_human_readable_count(total):<10} Total params",
              f"{size_mb:<10.3f} Total estimated model params size (MB)",
              f"{modes.get('train', 0):<10} Modules in train mode",
              f"{modes.get('eval', 0):<10} Modules in eval mode"]
    if generation_line:
        lines.append(generation_line)
    return "\n".join(lines)
