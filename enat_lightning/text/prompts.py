"""Prompt files for ``enat sample --prompts``: one caption per line -> a PromptBank."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .base import TextEncoder


def read_prompts(path: str | os.PathLike) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (one caption per line)")
    return prompts


def prompts_sha1(prompts: list[str]) -> str:
    return hashlib.sha1("\n".join(prompts).encode()).hexdigest()


def prompt_bank(model, prompts: list[str], encoder: TextEncoder):
    """Encodes the prompts and wraps the TextENAT ``model`` so that label i samples prompt i."""
    from enat_lightning.models.text import PromptBank, TextENAT

    if not isinstance(model, TextENAT):
        raise ValueError(f"--prompts needs a text-conditioned model (TextENAT), got {type(model).__name__}; "
                         f"class-conditional models take --labels")
    if (encoder.length, encoder.dim) != (model.cfg.text_len, model.cfg.text_dim):
        raise ValueError(f"the text encoder gives {encoder.length} x {encoder.dim} (T x Dt) embeddings but the model "
                         f"expects text_len={model.cfg.text_len}, text_dim={model.cfg.text_dim}: use the encoder "
                         f"the training shards were made with")
    text, mask = encoder.encode(prompts)
    return PromptBank(model, text.float(), mask)
