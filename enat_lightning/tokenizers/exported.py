"""A tokenizer inside an export folder (``enat export --with_tokenizer``): its weights as safetensors.

    tokenizer.json         {"identity": tok.identity(), "spec": the spec it was loaded from, "weights": file or null}
    tokenizer.safetensors  (with --with_tokenizer) the tensors; metadata holds the non-tensor settings

The identity is the tokenizer's own (kind, config, sha256 of its weights), so shards made with the
original tokenizer still match the exported copy. Pure torch + safetensors: loading runs no code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .base import Tokenizer

INFO = "tokenizer.json"
WEIGHTS = "tokenizer.safetensors"


def tokenizer_files(tokenizer: Tokenizer, spec, with_weights: bool) -> dict[str, bytes]:
    """{file name: bytes} describing ``tokenizer`` (and holding its weights when ``with_weights``)."""
    from safetensors.torch import save

    files = {}
    if with_weights:
        kind = tokenizer.identity().get("kind")
        if kind == "demo":
            tensors = {"centroids": tokenizer.centroids.contiguous()}
            meta = {"kind": "demo", "patch": str(tokenizer.patch), "image_size": str(tokenizer.image_size)}
        elif kind == "vqgan":
            tensors = {k: v.detach().cpu().contiguous() for k, v in tokenizer.state_dict().items()}
            meta = {"kind": "vqgan", "config": json.dumps(tokenizer.cfg.to_dict())}
        else:
            raise ValueError(f"--with_tokenizer: cannot store the weights of a {kind!r} tokenizer (demo and vqgan only)")
        files[WEIGHTS] = save(tensors, metadata=meta)
    info = {"identity": tokenizer.identity(), "spec": spec if isinstance(spec, (dict, type(None))) else str(spec),
            "weights": WEIGHTS if with_weights else None}
    files[INFO] = (json.dumps(info, indent=2) + "\n").encode()
    return files


def has_tokenizer_weights(path: str | os.PathLike) -> bool:
    return (Path(path) / WEIGHTS).is_file()


def load_exported_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer stored in the export folder ``path`` (every file of the folder checked first)."""
    from safetensors import safe_open

    from enat_lightning.models.pretrained import ExportError, verify_export

    path = Path(path)
    manifest = verify_export(path)
    if WEIGHTS not in manifest["files"]:
        raise ExportError(f"export {path} holds no tokenizer weights ({WEIGHTS}); it was exported without "
                          f"--with_tokenizer: give the tokenizer itself ({path / INFO} says which)")
    with safe_open(path / WEIGHTS, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads((path / INFO).read_text()) if (path / INFO).is_file() else {}
    if meta.get("kind") == "demo":
        from .demo import DemoTokenizer

        return DemoTokenizer(tensors["centroids"], int(meta["patch"]), int(meta["image_size"]))
    if meta.get("kind") == "vqgan":
        from .vqgan import VQGAN, resolve_config

        model = VQGAN(resolve_config(json.loads(meta["config"])))
        model.load_state_dict(tensors)
        model.weights_sha256 = (info.get("identity") or {}).get("weights_sha256")  # the original file's
        return model.eval()
    raise ExportError(f"{path / WEIGHTS}: unknown tokenizer kind {meta.get('kind')!r}")
