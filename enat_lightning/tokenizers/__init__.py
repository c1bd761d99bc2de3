"""Image tokenizers: the MaskGIT VQGAN and the demo patch-VQ (pure torch)."""
from __future__ import annotations

from pathlib import Path

from .base import Tokenizer
from .vqgan import PRESETS as VQGAN_PRESETS
from .vqgan import VQGAN, VQGANConfig
from enat_lightning.errors import InvalidInput

__all__ = ["Tokenizer", "VQGAN", "VQGANConfig", "VQGAN_PRESETS", "load_tokenizer"]

VQGAN_SUFFIXES = (".ckpt", ".pt", ".pth")


def load_tokenizer(spec: str | Path | dict) -> Tokenizer:
    """A tokenizer in eval mode from a spec -- the one parser of tokenizer specs (YAML, command line, Python).

    spec:
      * ``"demo"`` (the demo's tokenizer file, data/demo/tokenizer.npz), ``"demo:PATH"`` or ``"PATH.npz"``:
        the demo patch-VQ;
      * an export folder holding the tokenizer's weights (``enat export --with_tokenizer``);
      * a path to a VQGAN checkpoint (``.ckpt``/``.pt``/``.pth``, e.g. ``vqgan_jax_strongaug.ckpt``,
        official architecture assumed);
      * a dict, or its JSON text: ``{"kind": "vqgan", "path": ..., "config": ...}`` (config: VQGANConfig
        fields, the official ddconfig layout or a preset name; optional ``"trust_pickle": true``) or
        ``{"kind": "demo", "path": ...}``.
    """
    if isinstance(spec, (str, Path)):
        text = str(spec)
        if text.lstrip().startswith("{"):
            import json

            try:
                spec = json.loads(text)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"tokenizer spec {text!r} is not valid JSON ({e})") from e
        elif Path(text).is_dir():  # an export folder made with `enat export --with_tokenizer`
            from .exported import load_exported_tokenizer

            return load_exported_tokenizer(text)
        elif text == "demo" or text.startswith("demo:") or text.endswith(".npz"):
            from .demo import DemoTokenizer, default_demo_tokenizer

            path = default_demo_tokenizer() if text == "demo" else text.split(":", 1)[1] if text.startswith("demo:") else text
            return DemoTokenizer.load(path)
        else:
            path = Path(text)
            if path.suffix.lower() not in VQGAN_SUFFIXES:
                raise InvalidInput(f"tokenizer {path} should end in one of {list(VQGAN_SUFFIXES)} (a VQGAN checkpoint) "
                                 "or be 'demo' / a demo tokenizer .npz; for other tokenizers pass "
                                 "{'kind': ..., 'path': ...}")
            return VQGAN.from_checkpoint(path)
    if not isinstance(spec, dict):
        raise TypeError(f"tokenizer spec must be a path or a dict (or a spec string such as 'demo'), got "
                        f"{type(spec).__name__}")
    kind = spec.get("kind")
    if "path" not in spec:
        raise InvalidInput(f"tokenizer spec {spec} lacks 'path'")
    if kind == "vqgan":
        unknown = sorted(set(spec) - {"kind", "path", "config", "trust_pickle"})
        if unknown:
            raise InvalidInput(f"unknown keys {unknown} in vqgan tokenizer spec; "
                             "allowed: kind, path, config, trust_pickle")
        return VQGAN.from_checkpoint(spec["path"], spec.get("config"), trust_pickle=bool(spec.get("trust_pickle")))
    if kind == "demo":
        from .demo import DemoTokenizer

        return DemoTokenizer.load(spec["path"])
    raise InvalidInput(f"unknown tokenizer kind {kind!r} in spec {spec}; expected 'vqgan' or 'demo'")
