"""Where a command's model config comes from: a preset, training YAML(s) or a checkpoint."""
from __future__ import annotations

from pathlib import Path

from enat_lightning.models import ENATConfig, ModelConfig, NATConfig, config_from_dict, preset

_CONFIG_CLASSES = {"ENATConfig": ENATConfig, "NATConfig": NATConfig}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_merged(paths) -> dict:
    import yaml

    merged: dict = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        d = yaml.safe_load(p.read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{p}: expected a YAML mapping at top level")
        merged = _merge(merged, d)
    return merged


def _model_section(merged: dict) -> dict:
    model = merged.get("model")
    if isinstance(model, dict) and "init_args" in model:
        model = model["init_args"]
    return model if isinstance(model, dict) else {}


def yaml_uses_reuse(paths: list[str | Path]) -> bool:
    """Whether the run trains reuse-aware (``model.reuse_prob`` > 0, ENATModule's default 0.5)."""
    return float(_model_section(_load_merged(paths)).get("reuse_prob", 0.5)) > 0


def model_config_from_yaml(paths: list[str | Path]) -> ModelConfig:
    """``model.net`` of LightningCLI YAML(s), merged in order like repeated ``--config``.

    Accepts ``model.net`` (or ``model.init_args.net``) as ``{class_path: ...ENATConfig, init_args:
    {...}}``, as ``cfg.to_dict()`` (``arch`` key) or as a plain ENATConfig field dict.
    """
    net = _model_section(_load_merged(paths)).get("net")
    if net is None:
        return ENATConfig()  # ENATModule's default net
    if isinstance(net, dict) and "class_path" in net:
        cls_name = str(net["class_path"]).rsplit(".", 1)[-1]
        if cls_name not in _CONFIG_CLASSES:
            raise ValueError(f"model.net.class_path {net['class_path']!r} in {[str(p) for p in paths]}: "
                             f"expected ENATConfig or NATConfig")
        arch = "enat" if cls_name == "ENATConfig" else "nat"
        return config_from_dict({"arch": arch, **(net.get("init_args") or {})})
    if isinstance(net, dict):
        return config_from_dict(net)
    raise ValueError(f"model.net in {[str(p) for p in paths]} must be a mapping, got {net!r}")


def model_config_from_checkpoint(path: str | Path) -> ModelConfig:
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ck = torch.load(path, map_location="meta", weights_only=False, mmap=True)
    hp = ck.get("hyper_parameters", {}) if isinstance(ck, dict) else {}
    if "net" not in hp:
        raise ValueError(f"{path}: hyper_parameters has no 'net' model config (keys: {sorted(hp)})")
    return config_from_dict(hp["net"])


def default_reuse(args, cfg: ModelConfig) -> bool:
    """Sample with reuse unless the model cannot (NAT) or was trained without it (Table 7 "reuse?"
    column for presets, ``model.reuse_prob: 0`` in YAML)."""
    from enat_lightning.models.config import PRESET_USES_REUSE

    if not cfg.supports_reuse:
        return False
    if getattr(args, "preset", None):
        return PRESET_USES_REUSE.get(args.preset.lower().replace("_", "-"), True)
    if getattr(args, "config", None):
        return yaml_uses_reuse(args.config)
    return True


def model_config_from_args(args) -> ModelConfig:
    """From argparse ``--preset`` (+ ``--resolution``), ``-c/--config`` or ``--ckpt``."""
    if getattr(args, "preset", None):
        over = {}
        if getattr(args, "resolution", None):
            if args.resolution % 16:
                raise ValueError(f"--resolution {args.resolution} must be a multiple of 16 (VQGAN downsampling)")
            over["grid"] = args.resolution // 16
        return preset(args.preset, **over)
    if getattr(args, "config", None):
        return model_config_from_yaml(args.config)
    if getattr(args, "ckpt", None):
        return model_config_from_checkpoint(args.ckpt)
    raise ValueError("give a model: --preset NAME, -c CONFIG.yaml or --ckpt FILE")
