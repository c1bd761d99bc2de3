"""The caption-encoder interface and the command-line spec parser."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from enat_lightning.errors import InvalidInput


@runtime_checkable
class TextEncoder(Protocol):
    """Captions -> token embeddings.

    encode(captions) -> (emb float32 (N, T, Dt), mask bool (N, T)), T = ``length``, Dt = ``dim``;
    mask is True at real tokens (start/end tokens included) and False at padding. The empty
    caption "" is the classifier-free-guidance null condition.
    identity(): a JSON-able dict recorded in shard manifests (kind, dim, length, weights).
    """

    dim: int
    length: int

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def identity(self) -> dict: ...


def encode_in_batches(encoder: TextEncoder, captions: list[str], batch_size: int = 256
                      ) -> tuple[np.ndarray, np.ndarray]:
    """All captions through the encoder in chunks -> float16 (N, T, Dt), bool (N, T) numpy arrays."""
    embs, masks = [], []
    for i in range(0, len(captions), batch_size):
        emb, mask = encoder.encode(captions[i:i + batch_size])
        embs.append(emb.float().cpu().numpy().astype(np.float16))
        masks.append(mask.cpu().numpy().astype(bool))
    if not embs:
        return (np.zeros((0, encoder.length, encoder.dim), np.float16), np.zeros((0, encoder.length), bool))
    return np.concatenate(embs), np.concatenate(masks)


def build_text_encoder(spec: str, device: str | torch.device = "cpu") -> TextEncoder:
    """``hash`` / ``hash:dim=16,length=8,seed=0`` -> HashTextEncoder (test double);
    ``clip:DIR`` or a directory path -> CLIPTextEncoder with local weights in DIR."""
    from .clip import CLIPTextEncoder
    from .hashing import HashTextEncoder

    kind, _, rest = spec.partition(":")
    if kind == "hash":
        kwargs = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in ("dim", "length", "seed"):
                raise InvalidInput(f"bad hash text-encoder option {item!r} in {spec!r}; use dim=, length=, seed=")
            kwargs[key] = int(value)
        return HashTextEncoder(**kwargs)
    if kind == "clip":
        return CLIPTextEncoder(rest, device=device)
    if Path(spec).is_dir():
        return CLIPTextEncoder(spec, device=device)
    raise InvalidInput(f"unknown text encoder {spec!r}: use 'hash[:dim=..,length=..]', 'clip:DIR' or a "
                     f"directory holding a transformers CLIP text model")


IDENTITY_KEYS = ("kind", "dim", "length", "seed", "name", "weights")  # not "path": a copied encoder is the same one


def check_encoder_identity(now: dict | None, recorded: dict | None, where: str, what: str = "--text_encoder") -> None:
    """The one check that the text encoder used now is the one ``where`` (a checkpoint, shards) was made
    with: an encoder of the same shape but other weights (another CLIP, another hash seed) embeds
    captions the model never saw. ``now`` and ``recorded`` are ``TextEncoder.identity()`` dicts (the
    encoder used now, the one stored); None (older files, precomputed embeddings) is not checked. Raises
    InvalidInput (a ValueError) naming both."""
    if not recorded or not now:
        return
    diff = [k for k in IDENTITY_KEYS if k in recorded and recorded.get(k) != now.get(k)]
    if diff:
        raise InvalidInput(f"{what} is not the encoder {where} was made with: {', '.join(f'{k} {recorded[k]!r} there, {now.get(k)!r} now' for k in diff)}; use that encoder (its identity is in the checkpoint / manifest)")
