"""Parameter counts, built on the meta device (instant, no memory)."""
from __future__ import annotations

from dataclasses import replace

import torch

from .config import PRESET_USES_REUSE, PRESETS, ENATConfig, ModelConfig


def count_parameters(cfg: ModelConfig) -> int:
    from . import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


def official_extra_parameters(cfg: ModelConfig) -> int:
    """Parameters the official code builds but never uses: ``prev_embedder`` (D -> 4D -> D MLP).

    The paper's counts (ENAT-S 50.38M, ENAT-B 219M, ENAT-L 574M) include it; the official NAT
    baseline has the same module, so every architecture gets it.
    """
    D, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
    return 2 * D * hidden + hidden + D


def count_parameters_paper(cfg: ModelConfig) -> int:
    """Parameter count in the paper's convention (see ``official_extra_parameters``)."""
    return count_parameters(cfg) + official_extra_parameters(cfg)


def preset_table(num_classes: int = 1000, grid: int = 16) -> list[dict]:
    rows = []
    for name, cfg in PRESETS.items():
        cfg = replace(cfg, num_classes=num_classes, grid=grid)
        layers = f"{cfg.enc_depth}/{cfg.dec_depth}" if isinstance(cfg, ENATConfig) else f"{cfg.depth} shared"
        n = count_parameters(cfg)
        rows.append({"preset": name, "arch": cfg.to_dict()["arch"], "layers": layers, "width": cfg.width,
                     "heads": cfg.heads, "reuse": PRESET_USES_REUSE[name], "params_m": n / 1e6,
                     "params_paper_m": (n + official_extra_parameters(cfg)) / 1e6})
    return rows
