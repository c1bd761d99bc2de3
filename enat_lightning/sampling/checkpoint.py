"""Generator checkpoints: read the network (EMA weights) from a training checkpoint, write one from
official weights (``enat import-official``). Plain torch, no Lightning import.

Format read and written (a Lightning checkpoint dict; only these keys matter here):

    ckpt["hyper_parameters"]["net"]   model config dict, ``cfg.to_dict()`` (``config_from_dict``)
    ckpt["state_dict"]["ema.<key>"]   EMA weights of the network (preferred), or
    ckpt["state_dict"]["ema.module.<key>"]  (the same, wrapped in torch.optim.swa_utils.AveragedModel)
    ckpt["state_dict"]["net.<key>"]   raw weights, the fallback when the checkpoint has no EMA copy

``<key>`` are the parameter names of ``enat_lightning.models.ENAT`` / ``NAT``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from enat_lightning.fileio import atomic_torch_save
from enat_lightning.models import build_model, config_from_dict
from enat_lightning.models.config import ModelConfig

WEIGHT_PREFIXES = ("ema.module.", "ema.", "net.")  # tried in this order


def load_checkpoint_dict(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"checkpoint {path} is not a training checkpoint: expected a dict with "
                         f"'state_dict' and 'hyper_parameters'")
    return ckpt


def generator_config(ckpt: dict, path: str | os.PathLike = "checkpoint") -> ModelConfig:
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or not isinstance(hp.get("net"), dict):
        raise ValueError(f"{path}: 'hyper_parameters' has no model config dict under 'net' "
                         f"(found keys {sorted(hp) if isinstance(hp, dict) else type(hp).__name__})")
    try:
        return config_from_dict(hp["net"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad model config in hyper_parameters['net']: {e}") from e


def generator_state_dict(ckpt: dict, path: str | os.PathLike = "checkpoint") -> tuple[dict, str]:
    """Network weights (prefix stripped) and the prefix they came from (EMA preferred)."""
    sd = ckpt["state_dict"]
    for prefix in WEIGHT_PREFIXES:
        weights = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if weights:
            return weights, prefix
    raise ValueError(f"{path}: state_dict has no keys starting with {list(WEIGHT_PREFIXES)}; "
                     f"first keys: {sorted(sd)[:5]}")


def load_generator(ckpt_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode with EMA weights, cfg) from a checkpoint; mismatches name the keys."""
    ckpt = load_checkpoint_dict(ckpt_path)
    cfg = generator_config(ckpt, ckpt_path)
    weights, prefix = generator_state_dict(ckpt, ckpt_path)
    model = build_model(cfg)
    own = model.state_dict()
    if prefix.startswith("ema."):
        weights.pop("n_averaged", None)  # AveragedModel's counter, not a network buffer
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = [f"{k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(weights)) if weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{ckpt_path}: weights under '{prefix}' do not fit {cfg}: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}, shape mismatches {wrong[:8]}")
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg


def save_generator_checkpoint(path: str | os.PathLike, cfg: ModelConfig, weights: dict,
                              extra: dict | None = None) -> Path:
    """Writes a checkpoint in the format above (atomically) with ``weights`` as both the EMA and
    the raw network copy. torch.save stores a tensor shared by both keys once, so this costs no
    extra disk space."""
    state = {}
    for k, v in weights.items():
        state[f"net.{k}"] = v
        state[f"ema.{k}"] = v
    ckpt = {"hyper_parameters": {"net": cfg.to_dict()}, "state_dict": state, "epoch": 0, "global_step": 0,
            **(extra or {})}
    return atomic_torch_save(ckpt, path)
