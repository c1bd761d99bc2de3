"""Prompts -> text conditions: prompt files for ``enat sample --prompts`` (one caption per line)
and ``encode_prompts`` (captions -> ``Captions`` through a text encoder)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .base import TextEncoder
from enat_lightning.errors import InvalidInput, MissingInput


def read_prompts(path: str | os.PathLike) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"prompts file {path} does not exist")
    prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise InvalidInput(f"{path} holds no prompts (one caption per line)")
    return prompts


def prompts_sha1(prompts: list[str]) -> str:
    return hashlib.sha1("\n".join(prompts).encode()).hexdigest()


def encode_prompts(prompts: list[str], encoder: TextEncoder, cfg=None):
    """Captions -> the text condition of a model: ``Captions`` (float32 (N, T, Dt), bool (N, T)).

    With ``cfg`` (the model's config) the encoder must give the model's caption shape."""
    from enat_lightning.models import Captions

    if cfg is not None:
        if cfg.condition != "text":
            raise InvalidInput(f"prompts need a text-conditioned model (condition: text), got condition="
                             f"{cfg.condition!r}; class-conditional models take --labels")
        if (encoder.length, encoder.dim) != (cfg.text_len, cfg.text_dim):
            raise InvalidInput(f"the text encoder gives {encoder.length} x {encoder.dim} (T x Dt) embeddings but the "
                             f"model expects text_len={cfg.text_len}, text_dim={cfg.text_dim}: use the encoder "
                             f"the training shards were made with")
    text, mask = encoder.encode(list(prompts))
    return Captions(text.float(), mask.bool())
