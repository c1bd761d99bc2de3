"""Helpers for the data tests (imported by name; tests/ has no packages): tiny shard sets written with the
real writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from enat_lightning.data.format import Sample
from enat_lightning.data.writer import ShardSetWriter

SIDE, CODEBOOK, CLASSES = 4, 16, 5


def make_samples(n: int, seed: int = 0, flip: bool = True, text: tuple[int, int, int] | None = None) -> list[Sample]:
    """n samples whose ids encode their index (tokens[0, 0] = i % 16, tokens[0, 1] = i // 16) so a
    batch row tells which sample it came from."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = rng.integers(0, CODEBOOK, (SIDE, SIDE))
        t[0, 0], t[0, 1] = i % CODEBOOK, (i // CODEBOOK) % CODEBOOK
        s = Sample(key=f"k{i:06d}", tokens=t, label=i % CLASSES, flip=t[:, ::-1].copy() if flip else None)
        if text is not None:
            n_cap, tt, d = text
            s.text = rng.standard_normal((n_cap, tt, d)).astype(np.float16)
            s.text_mask = np.arange(tt)[None].repeat(n_cap, 0) < rng.integers(1, tt + 1, (n_cap, 1))
        out.append(s)
    return out


def write_set(out: Path, samples: list[Sample], shard_size: int, flip: bool = True, text: dict | None = None,
              num_classes: int | None = CLASSES) -> Path:
    w = ShardSetWriter(out, {"test": str(out)}, codebook_size=CODEBOOK, latent_side=SIDE, num_classes=num_classes,
                       tokenizer={"kind": "test"}, has_flip=flip, text=text)
    for k in range(0, len(samples), shard_size):
        w.add_shard(samples[k:k + shard_size])
    w.finish()
    return out


def sample_index(tokens_row) -> int:
    """Inverse of make_samples' marker (row of a batch, flattened (L,), original orientation)."""
    return int(tokens_row[0]) + CODEBOOK * int(tokens_row[1])
