"""HashTextEncoder: a TEST DOUBLE for a real caption encoder (no weights, no downloads).

It exists so that the text-to-image pipeline (shards, training, CFG sampling, the CLI) can run
end to end in CPU tests and demos. Its embeddings carry word identity and order but no meaning:
never use it for real training.

Tokens: [start] + lower-cased words (runs of letters/digits) + [end], cut/padded to ``length``.
Each word's vector is a fixed pseudo-random unit-variance vector seeded by a hash of the word (so
the same word gives the same vector in every process), plus a sinusoidal position code.
The empty caption gives [start, end]: the null condition.
"""
from __future__ import annotations

import hashlib
import math
import re

import torch

_WORD = re.compile(r"[a-z0-9]+")


class HashTextEncoder:
    """Deterministic stand-in encoder: captions -> (N, length, dim) embeddings, (N, length) mask."""

    def __init__(self, dim: int = 16, length: int = 8, seed: int = 0):
        if dim < 2 or length < 2:
            raise ValueError(f"HashTextEncoder needs dim >= 2 and length >= 2, got dim={dim}, length={length}")
        self.dim, self.length, self.seed = dim, length, seed
        pos = torch.arange(length, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(100.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        pe = torch.zeros(length, dim, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
        self._pos = (0.5 * pe).float()  # (T, Dt)

    def _vector(self, token: str) -> torch.Tensor:
        digest = hashlib.blake2b(f"{self.seed}:{token}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        return torch.randn(self.dim, generator=g)  # (Dt,)

    def tokens(self, caption: str) -> list[str]:
        words = _WORD.findall(caption.lower())[: self.length - 2]
        return ["<start>", *words, "<end>"]

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(captions, str):
            raise TypeError("encode takes a list of captions, not a single string")
        emb = torch.zeros(len(captions), self.length, self.dim)  # (N, T, Dt)
        mask = torch.zeros(len(captions), self.length, dtype=torch.bool)  # (N, T)
        for i, caption in enumerate(captions):
            toks = self.tokens(caption)
            emb[i, : len(toks)] = torch.stack([self._vector(t) for t in toks]) + self._pos[: len(toks)]
            mask[i, : len(toks)] = True
        return emb, mask

    def identity(self) -> dict:
        return {"kind": "hash", "test_double": True, "dim": self.dim, "length": self.length, "seed": self.seed}
