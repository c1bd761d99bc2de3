"""Import of official ENAT checkpoints (LeapLabTHU/ENAT ``DiT`` with ``enc_dec``).

Only parameter names are translated; the semantics are re-implemented in ``enat.py``.
"""
from __future__ import annotations

import re


from .config import ENATConfig
from .enat import ENAT
from enat_lightning.errors import InvalidInput

OFFICIAL_ARGS = ("input_size", "hidden_size", "num_heads", "enc_dec", "codebook_size", "num_classes",
                 "class_dropout_prob", "mlp_ratio")
_RENAMES = [
    (r"^x_embedder\.", "embed."),
    (r"^y_embedder\.", "label_embed."),
    (r"^prev_proj\.", "reuse_proj."),
    (r"^norm\.", "head.norm."),
    (r"^mlm_layer\.(fc|ln)\.", r"head.\1."),
    (r"^mlm_layer\.bias$", "head.bias"),
]
_UNUSED_PREFIXES = ("prev_embedder.",)  # built but never called by the official forward


def config_from_official(config: dict) -> ENATConfig:
    """ENATConfig from the official constructor's argument names."""
    missing = [k for k in ("input_size", "hidden_size", "num_heads", "enc_dec") if k not in config]
    if missing:
        raise InvalidInput(f"official config lacks {missing}; expected keys {list(OFFICIAL_ARGS)}")
    enc, dec = config["enc_dec"]
    return ENATConfig(
        codebook_size=int(config.get("codebook_size", 1024)), num_classes=int(config.get("num_classes", 1000)),
        grid=int(config["input_size"]), width=int(config["hidden_size"]), heads=int(config["num_heads"]),
        enc_depth=int(enc), dec_depth=int(dec), mlp_ratio=float(config.get("mlp_ratio", 4.0)),
        class_dropout_prob=float(config.get("class_dropout_prob", 0.1)))


def convert_official_state_dict(state_dict: dict, enc_depth: int) -> dict:
    """Official key names -> ours. ``blocks.i`` splits into ``encoder.i`` / ``decoder.(i-N_E)``."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith(_UNUSED_PREFIXES):
            continue
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if m:
            i = int(m.group(1))
            key = f"encoder.{i}.{m.group(2)}" if i < enc_depth else f"decoder.{i - enc_depth}.{m.group(2)}"
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        if key == "head.bias":
            value = value.reshape(-1)
        out[key] = value
    return out


def load_official_weights(model: ENAT, state_dict: dict, source: str = "state_dict") -> ENAT:
    """Loads official-named weights into ``model``; a mismatch names the keys and shapes."""
    converted = convert_official_state_dict(state_dict, model.cfg.enc_depth)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = [f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(converted)) if converted[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise InvalidInput(f"{source} does not fit the ENAT config {model.cfg}:\n"
                         f"  missing keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}\n"
                         f"  unexpected keys: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}\n"
                         f"  shape mismatches: {wrong[:10]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in converted.items()})
    return model


def from_official(config: dict, state_dict: dict) -> ENAT:
    """An ENAT in eval mode from an official config (argument names) and state_dict (key names)."""
    model = ENAT(config_from_official(config))
    return load_official_weights(model, state_dict).eval()
