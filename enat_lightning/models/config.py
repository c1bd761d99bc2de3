"""Network configurations as frozen dataclasses, and the paper's presets (Table 7) as data."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal
from enat_lightning.errors import InvalidInput

ATTENTION_REMOVALS = ("none", "mask_to_visible", "visible_to_mask", "visible_to_visible", "mask_to_mask")


class NetworkConfig:
    """Common base of the network configs.

    A plain (non-dataclass) base on purpose: LightningCLI / jsonargparse then treat ``model.net`` as a
    class_path/init_args choice, so a command-line override such as ``--model.net.init_args.width 32``
    changes one field of the configured class instead of rebuilding the first dataclass of a union.
    """


@dataclass(frozen=True)
class ENATConfig(NetworkConfig):
    """ENAT: encoder over visible tokens, decoder over [MASK] tokens (paper §4).

    The switches below each reproduce one ablation of paper Table 6:
      attention          "sc" (SC-attention, default) | "self_cross" (Table 6b: self- and
                         cross-attention stacked alternately inside each block)
      reuse_projection   True (f(.) = x + MLP(LN(x))) | False (Table 6c: reuse raw features)
      reuse_tokens       "visible" (default) | "all" (Table 6d: every previous token is context)
      reuse_layers       "last" (default) | "layerwise" (Table 6e: layer i reads the previous
                         step's layer-i features)

    ``condition`` chooses what the network is conditioned on (models/conditioning.py): "class"
    (a label table, ImageNet) or "text" (caption token embeddings (T, Dt) from a text encoder,
    MS-COCO, paper §5). The ``text_*`` fields apply to text models only; a text model ignores
    ``num_classes`` and ``class_dropout_prob``.
    """

    codebook_size: int = 1024
    num_classes: int = 1000
    grid: int = 16  # latent side; L = grid**2 tokens in raster order
    width: int = 366
    heads: int = 6
    enc_depth: int = 15
    dec_depth: int = 1
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1  # applied by the training batch-prep, never inside forward
    embed_dropout: float = 0.1  # dropout after the embedding LayerNorm (train mode only)
    attention: Literal["sc", "self_cross"] = "sc"
    reuse_projection: bool = True
    reuse_tokens: Literal["visible", "all"] = "visible"
    reuse_layers: Literal["last", "layerwise"] = "last"
    condition: Literal["class", "text"] = "class"
    text_dim: int = 768  # Dt, width of the text encoder's token embeddings (CLIP ViT-L/14)
    text_len: int = 77  # T, tokens per caption (CLIP context length)
    text_adaln: Literal["none", "pooled", "constant"] = "none"  # block modulation of a text model
    text_in: Literal["both", "encoder", "decoder"] = "both"  # which blocks read the caption tokens
    text_shared_kv: bool = False  # tie the context K/V projection (kv.A) to the own-token one (kv.B)
    text_use_mask: bool = True  # False: attend to caption padding tokens too (U-ViT attends to all 77)

    def __post_init__(self) -> None:
        _check_common(self)
        if self.enc_depth < 1 or self.dec_depth < 1:
            raise InvalidInput(f"enc_depth and dec_depth must be >= 1, got {self.enc_depth}/{self.dec_depth}")
        _check_choice("attention", self.attention, ("sc", "self_cross"))
        _check_choice("reuse_tokens", self.reuse_tokens, ("visible", "all"))
        _check_choice("reuse_layers", self.reuse_layers, ("last", "layerwise"))
        _check_choice("condition", self.condition, ("class", "text"))
        _check_choice("text_adaln", self.text_adaln, ("none", "pooled", "constant"))
        _check_choice("text_in", self.text_in, ("both", "encoder", "decoder"))
        if self.text_dim < 1 or self.text_len < 1:
            raise InvalidInput(f"text_dim and text_len must be >= 1, got {self.text_dim}/{self.text_len}")
        if self.condition == "class":
            changed = [f.name for f in fields(self) if f.name.startswith("text_") and getattr(self, f.name) != f.default]
            if changed:
                raise InvalidInput(f"{changed} apply to text models only: set condition: text")
        elif self.attention != "sc":
            raise InvalidInput(f"condition='text' reads captions through SC-attention: attention must be 'sc', "
                             f"got {self.attention!r}")

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def depth(self) -> int:
        return self.enc_depth + self.dec_depth

    supports_reuse = True  # ENAT has the computation-reuse path (§4.2)

    def to_dict(self) -> dict:
        return {"arch": "enat", **asdict(self)}


@dataclass(frozen=True)
class NATConfig(NetworkConfig):
    """The conventional MaskGIT-style NAT: every token through the same blocks (paper §3, Fig. 2).

    attention_removal cuts one spatial interaction (paper Fig. 2); "X_to_Y" removes attention where
    X tokens are queries and Y tokens are keys.
    """

    codebook_size: int = 1024
    num_classes: int = 1000
    grid: int = 16
    width: int = 288
    heads: int = 6
    depth: int = 8
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    embed_dropout: float = 0.1
    attention_removal: str = "none"

    def __post_init__(self) -> None:
        _check_common(self)
        if self.depth < 1:
            raise InvalidInput(f"depth must be >= 1, got {self.depth}")
        _check_choice("attention_removal", self.attention_removal, ATTENTION_REMOVALS)

    seq_len = ENATConfig.seq_len
    mask_id = ENATConfig.mask_id
    null_label = ENATConfig.null_label
    condition = "class"  # a NAT is always class-conditional
    supports_reuse = False  # every token is re-encoded at every step

    def to_dict(self) -> dict:
        return {"arch": "nat", **asdict(self)}


def _check_common(cfg) -> None:
    if cfg.width % cfg.heads != 0:
        raise InvalidInput(f"width ({cfg.width}) must be divisible by heads ({cfg.heads})")
    for name in ("codebook_size", "num_classes", "grid", "width", "heads"):
        if getattr(cfg, name) < 1:
            raise InvalidInput(f"{name} must be >= 1, got {getattr(cfg, name)}")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InvalidInput(f"{name} must be one of {list(choices)}, got {value!r}")


ModelConfig = ENATConfig | NATConfig

# Paper Table 7 (App. A.1). 256 px, 1000 classes; override grid/num_classes for other settings.
PRESETS: dict[str, ModelConfig] = {
    "nat-baseline": NATConfig(width=288, heads=6, depth=8),
    "disentangled-8-8": ENATConfig(width=288, heads=6, enc_depth=8, dec_depth=8),
    "disentangled-12-4": ENATConfig(width=318, heads=6, enc_depth=12, dec_depth=4),
    "disentangled-15-1": ENATConfig(width=366, heads=6, enc_depth=15, dec_depth=1),
    "enat-s": ENATConfig(width=366, heads=6, enc_depth=15, dec_depth=1),
    "enat-b": ENATConfig(width=768, heads=8, enc_depth=15, dec_depth=1),
    "enat-l": ENATConfig(width=1024, heads=16, enc_depth=22, dec_depth=2),
}
# Which presets sample with computation reuse (Table 7, "reuse?" column).
PRESET_USES_REUSE = {"nat-baseline": False, "disentangled-8-8": False, "disentangled-12-4": False,
                     "disentangled-15-1": False, "enat-s": True, "enat-b": True, "enat-l": True}


def preset(name: str, **overrides) -> ModelConfig:
    """A Table 7 preset, optionally with fields replaced (e.g. ``grid=32`` for 512 px)."""
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise InvalidInput(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[key], **overrides)


# Older forms still read by ``config_from_dict``: the separate text-model config (``arch:
# text_enat`` / ``TextENATConfig``), whose defaults were ENAT-B and whose text fields had other names.
_LEGACY_TEXT_DEFAULTS = {"width": 768, "heads": 8}
_LEGACY_TEXT_KEYS = {"adaln": "text_adaln", "shared_context_kv": "text_shared_kv", "use_text_mask": "text_use_mask"}


def config_from_dict(d: dict) -> ModelConfig:
    """Inverse of ``cfg.to_dict()``: rebuilds the config saved in a checkpoint's hparams.

    Also reads the YAML form ``{class_path: enat_lightning.models.NATConfig, init_args: {...}}`` and
    the text-model configs of older checkpoints (``arch: text_enat``, ``TextENATConfig``).
    """
    classes = {"enat": ENATConfig, "nat": NATConfig}
    by_name = {"ENATConfig": "enat", "NATConfig": "nat", "TextENATConfig": "text_enat"}
    d = dict(d)
    if "class_path" in d:
        name = str(d.pop("class_path")).rsplit(".", 1)[-1]
        if name not in by_name:
            raise InvalidInput(f"unknown network class {name!r}; expected one of {sorted(by_name)}")
        d = {"arch": by_name[name], **dict(d.pop("init_args", None) or {}), **d}
    arch = d.pop("arch", "enat")
    if arch == "text_enat":
        d = {**_LEGACY_TEXT_DEFAULTS, **{_LEGACY_TEXT_KEYS.get(k, k): v for k, v in d.items()}, "condition": "text"}
        arch = "enat"
    cls = classes.get(arch)
    if cls is None:
        raise InvalidInput(f"unknown arch {arch!r} in model config; expected 'enat' or 'nat'")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InvalidInput(f"unknown {arch} config keys {unknown}; known keys: {sorted(known)}")
    return cls(**d)
