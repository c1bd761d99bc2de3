"""Image tokenizers behind one protocol (``base.Tokenizer``) and one config form (pure torch).

``load_tokenizer(spec)`` is the one parser of tokenizer specs, for YAML, every command's ``--tokenizer``
and Python alike. The one form is ``{class_path: NAME, init_args: {...}}`` (a dict, or its JSON/YAML text
on a command line); short spellings are aliases of it:

    demo                 -> {class_path: enat_lightning.tokenizers.VQAutoencoder, init_args: {path:
                            data/demo/tokenizer_vq.pt}}   (the demo's trained tokenizer, `make demo`)
    demo-kmeans          -> {class_path: enat_lightning.tokenizers.DemoTokenizer}   (data/demo/tokenizer.npz)
    demo:PATH, PATH.npz  -> {class_path: enat_lightning.tokenizers.DemoTokenizer, init_args: {path: PATH}}
    PATH.ckpt|.pt|.pth   -> a tokenizer trained with ``enat fit`` (its checkpoint records its class), else
                            {class_path: enat_lightning.tokenizers.VQGAN, init_args: {path: PATH}}
                            (the official MaskGIT VQGAN file layout)

Adding a tokenizer (e.g. LlamaGen's VQ-16, a diffusers ``VQModel``): one class implementing
``base.Tokenizer`` plus a ``from_config(**init_args)`` classmethod, and one line in ``TOKENIZERS`` below
(registry name -> "module:Class", imported only when used, so optional dependencies stay optional).
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from enat_lightning.errors import UserError

from .base import TRAINED_KEY, Tokenizer
from .vqgan import PRESETS as VQGAN_PRESETS
from .vqgan import VQGAN, VQGANConfig

__all__ = ["Tokenizer", "VQGAN", "VQGANConfig", "VQGAN_PRESETS", "TOKENIZERS", "load_tokenizer",
           "tokenizer_class", "check_codebook_size", "spec_text"]

# The registry: class_path -> "module:Class". A class is also found by its bare name (``VQGAN``).
TOKENIZERS: dict[str, str] = {
    "enat_lightning.tokenizers.VQGAN": "enat_lightning.tokenizers.vqgan:VQGAN",
    "enat_lightning.tokenizers.DemoTokenizer": "enat_lightning.tokenizers.demo:DemoTokenizer",
    "enat_lightning.tokenizers.VQAutoencoder": "enat_lightning.tokenizers.autoencoder:VQAutoencoder",
    "enat_lightning.tokenizers.LlamaGenVQ": "enat_lightning.tokenizers.llamagen:LlamaGenVQ",
    "enat_lightning.tokenizers.DiffusersVQ": "enat_lightning.tokenizers.diffusers_vq:DiffusersVQ",  # [diffusers] extra
}
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


def tokenizer_class(class_path: str) -> type:
    """The class a ``class_path`` names: a registry name, a bare registered class name, or any dotted path
    to a class with ``encode``/``decode``/``identity``/``from_config``."""
    target = TOKENIZERS.get(class_path) or next(
        (v for k, v in TOKENIZERS.items() if k.rsplit(".", 1)[1] == class_path), None)
    if target is None:
        module, _, name = class_path.rpartition(".")
        target = f"{module}:{name}" if module else None
    known = ", ".join(TOKENIZERS)
    if target is None:
        raise UserError(f"unknown tokenizer class_path {class_path!r}; registered: {known}")
    module, name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"tokenizer class_path {class_path!r} cannot be imported ({e}); registered: {known}") from e
    missing = [m for m in ("encode", "decode", "identity", "from_config") if not hasattr(cls, m)]
    if missing:
        raise UserError(f"tokenizer class_path {class_path!r} is not a tokenizer (lacks {', '.join(missing)}; "
                        f"see enat_lightning/tokenizers/base.py)")
    return cls


def normalize_spec(spec) -> dict:
    """Any accepted spelling -> ``{"class_path": ..., "init_args": {...}}``."""
    if isinstance(spec, (str, Path)):
        text = str(spec).strip()
        if text.startswith("{"):
            import yaml

            try:
                spec = yaml.safe_load(text)  # JSON is YAML; flow-style YAML from a shell works too
            except yaml.YAMLError as e:
                raise UserError(f"tokenizer spec {text!r} is not valid JSON/YAML ({' '.join(str(e).split())})") from e
        elif text == "demo":
            from .demo import demo_vq_tokenizer

            return {"class_path": "enat_lightning.tokenizers.VQAutoencoder", "init_args": {"path": str(demo_vq_tokenizer())}}
        elif text == "demo-kmeans":
            return {"class_path": "enat_lightning.tokenizers.DemoTokenizer", "init_args": {}}
        elif text.startswith("demo:") or text.endswith(".npz"):
            path = text.split(":", 1)[1] if text.startswith("demo:") else text
            return {"class_path": "enat_lightning.tokenizers.DemoTokenizer", "init_args": {"path": path}}
        elif Path(text).suffix.lower() in CHECKPOINT_SUFFIXES:
            return {"class_path": _checkpoint_class(Path(text)), "init_args": {"path": text}}
        else:
            raise UserError(f"tokenizer {text!r}: expected 'demo', 'demo-kmeans', 'demo:PATH', a .npz demo tokenizer, a checkpoint "
                            f"({'/'.join(CHECKPOINT_SUFFIXES)}) or {{class_path: ..., init_args: {{...}}}}")
    if not isinstance(spec, dict):
        raise UserError(f"tokenizer spec must be a path, an alias such as 'demo' or {{class_path, init_args}}, "
                        f"got {type(spec).__name__}")
    if "kind" in spec and "class_path" not in spec:
        kind = spec.get("kind")
        cls = {"vqgan": "VQGAN", "demo": "DemoTokenizer"}.get(str(kind), "NAME")
        args = {k: v for k, v in spec.items() if k != "kind"}
        raise UserError(f"tokenizer spec {spec}: the {{kind: ...}} form is gone; write {{class_path: "
                        f"enat_lightning.tokenizers.{cls}, init_args: {json.dumps(args, default=str)}}}")
    unknown = sorted(set(spec) - {"class_path", "init_args"})
    if "class_path" not in spec or unknown:
        raise UserError(f"tokenizer spec {spec}: expected keys class_path and init_args"
                        + (f" (unknown: {unknown})" if unknown else " (class_path is missing)"))
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise UserError(f"tokenizer spec {spec}: init_args must be a mapping")
    return {"class_path": str(spec["class_path"]), "init_args": dict(init_args)}


def _checkpoint_class(path: Path) -> str:
    """The class of a tokenizer checkpoint: what an ``enat fit`` tokenizer run recorded, else the VQGAN."""
    if path.is_file():
        try:
            from enat_lightning.sampling.checkpoint import read_torch_file

            ckpt = read_torch_file(path, what="tokenizer checkpoint", mmap=True)
        except Exception:  # noqa: BLE001 - not ours to judge here: the VQGAN loader reports bad files
            return "enat_lightning.tokenizers.VQGAN"
        record = ckpt.get(TRAINED_KEY) if isinstance(ckpt, dict) else None
        if isinstance(record, dict) and record.get("class_path"):
            return str(record["class_path"])
    return "enat_lightning.tokenizers.VQGAN"


def load_tokenizer(spec) -> Tokenizer:
    """A tokenizer in eval mode from any spec spelling (module docstring). Bad specs -> UserError;
    a missing weights file -> FileNotFoundError naming it. A folder is an export folder holding the
    tokenizer's weights (``enat export --with_tokenizer``), read without running code."""
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        from .exported import load_exported_tokenizer

        return load_exported_tokenizer(spec)
    spec = normalize_spec(spec)
    cls = tokenizer_class(spec["class_path"])
    try:
        return cls.from_config(**spec["init_args"])
    except TypeError as e:
        raise UserError(f"tokenizer {spec['class_path']}: bad init_args {spec['init_args']} ({e})") from e


def spec_text(spec) -> str:
    """A spec as one short line for messages."""
    return spec if isinstance(spec, str) else json.dumps(spec, default=str)


def check_codebook_size(tokenizer: Tokenizer, codebook_size: int, where: str = "the generator",
                        tokenizer_name: str = "the tokenizer") -> None:
    """A generator whose ``codebook_size`` differs from its tokenizer's cannot decode: one line naming both."""
    if int(tokenizer.codebook_size) != int(codebook_size):
        raise UserError(f"{tokenizer_name} has {tokenizer.codebook_size} codes but {where} has codebook_size "
                        f"{codebook_size}: use the tokenizer the generator's shards were made with")


def __getattr__(name: str):
    """Registered classes as attributes of this package (``enat_lightning.tokenizers.LlamaGenVQ``), imported on
    first use so optional dependencies stay optional: the registry names are importable class paths."""
    target = TOKENIZERS.get(f"{__name__}.{name}")
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
