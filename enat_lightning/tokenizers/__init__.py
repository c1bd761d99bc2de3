"""Image tokenizers: the MaskGIT VQGAN and the demo patch-VQ (pure torch)."""
from __future__ import annotations

from pathlib import Path

from .base import Tokenizer
from .vqgan import PRESETS as VQGAN_PRESETS
from .vqgan import VQGAN, VQGANConfig

__all__ = ["Tokenizer", "VQGAN", "VQGANConfig", "VQGAN_PRESETS", "load_tokenizer"]

VQGAN_SUFFIXES = (".ckpt", ".pt", ".pth")


def load_tokenizer(spec: str | Path | dict) -> Tokenizer:
    """A tokenizer in eval mode from a spec.

    spec: a path to a VQGAN checkpoint (``.ckpt``/``.pt``/``.pth``, e.g. ``vqgan_jax_strongaug.ckpt``,
    official architecture assumed), or a dict ``{"kind": "vqgan", "path": ..., "config": ...}``
    (config: VQGANConfig fields, the official ddconfig layout or a preset name; optional
    ``"trust_pickle": true``) or ``{"kind": "demo", "path": ...}`` for the demo patch-VQ.
    """
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.suffix.lower() not in VQGAN_SUFFIXES:
            raise ValueError(f"tokenizer path {path} should end in one of {list(VQGAN_SUFFIXES)} (a VQGAN "
                             "checkpoint); for other tokenizers pass a dict {'kind': ..., 'path': ...}")
        return VQGAN.from_checkpoint(path)
    if not isinstance(spec, dict):
        raise TypeError(f"tokenizer spec must be a path or a dict, got {type(spec).__name__}")
    kind = spec.get("kind")
    if "path" not in spec:
        raise ValueError(f"tokenizer spec {spec} lacks 'path'")
    if kind == "vqgan":
        unknown = sorted(set(spec) - {"kind", "path", "config", "trust_pickle"})
        if unknown:
            raise ValueError(f"unknown keys {unknown} in vqgan tokenizer spec; "
                             "allowed: kind, path, config, trust_pickle")
        return VQGAN.from_checkpoint(spec["path"], spec.get("config"), trust_pickle=bool(spec.get("trust_pickle")))
    if kind == "demo":
        # --- demo branch: the patch-VQ of the demo data pipeline (module owned by the data code) ---
        from .demo import DemoTokenizer

        return DemoTokenizer.load(spec["path"])
    raise ValueError(f"unknown tokenizer kind {kind!r} in spec {spec}; expected 'vqgan' or 'demo'")
