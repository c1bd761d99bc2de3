"""Token shard format v1: webdataset tar shards plus a ``manifest.json`` beside them.

One tar member group per image, keyed ``<key>.<field>`` (webdataset convention, the key has no dot):

  tokens.npy     uint16 (h, w)          token ids of the image, raster order
  flip.npy       uint16 (h, w)          ids of the horizontally flipped image (only if has_flip)
  cls            ASCII int              class id (absent for text-only data -> label 0)
  text.npy       float16 (N, T, Dt)     N caption embeddings, T tokens of width Dt (text data)
  text_mask.npy  bool (N, T)            True = real caption token (text data)

The manifest records everything a consumer must agree with (codebook size, latent side, classes,
the tokenizer's identity) and the per-shard sample counts, which let readers detect truncation and
split a validation pass exactly across ranks and workers. Every file is written atomically.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from enat_lightning.fileio import atomic_write_bytes, atomic_writer
from enat_lightning.errors import InvalidInput

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
FIELDS = ("tokens.npy", "flip.npy", "cls", "text.npy", "text_mask.npy")


class BadDataError(InvalidInput):
    """A shard or sample that must not reach the model; the message names the shard and key.

    Bad data in the user's shards or manifest is the user's input: an InvalidInput (so also a ValueError),
    which the CLI prints as one line."""


@dataclass
class Sample:
    key: str
    tokens: np.ndarray  # (h, w) integer ids
    label: int | None = None
    flip: np.ndarray | None = None  # (h, w)
    text: np.ndarray | None = None  # (N, T, Dt)
    text_mask: np.ndarray | None = None  # (N, T) bool


@dataclass
class ShardInfo:
    name: str  # a plain file name in the manifest's folder (``check_shard_name``)
    samples: int


def check_shard_name(name, where: str = "manifest") -> str:
    """The one rule for a shard name read from a manifest: a plain file name inside the manifest's folder.

    A data folder someone sends you must never run code or read outside itself. webdataset opens
    ``pipe:CMD`` through a shell and ``scheme://`` through other programs, so a name from a file's
    content may hold no scheme (no ``:``), no path separator, no ``..`` and no absolute path. Remote or
    piped sources come only from the user's own option (``--shards URL``), where the name is joined to
    that base. Raises BadDataError naming the manifest and the name."""
    ok = (isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(("-", "~"))
          and not any(c in name for c in ("/", "\\", ":", "\0", "\n", "\r", "|", ";", "`", "$")))
    if not ok:
        raise BadDataError(f"{where}: shard name {name!r} is not a plain file name in the manifest's folder "
                           f"(no scheme such as pipe: or https:, no path separators, no '..'); a manifest must "
                           f"never name a command or a file elsewhere. Rewrite the manifest with "
                           f"`enat tokenize ...`, or point --shards at the remote folder yourself")
    return name


@dataclass
class Manifest:
    sample_count: int
    shards: list[ShardInfo]
    codebook_size: int
    latent_side: int
    num_classes: int | None  # None for text-only data
    tokenizer: dict  # Tokenizer.identity(): kind, config, weights hash
    has_flip: bool
    text: dict | None = None  # {"encoder": str, "max_len": T, "dim": Dt} or None
    source: dict = field(default_factory=dict)  # free-form provenance (root, resolution, class names)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> "Manifest":
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BadDataError(f"{where}: format_version {version!r} is not supported (this code reads "
                               f"version {FORMAT_VERSION})")
        required = ("sample_count", "shards", "codebook_size", "latent_side", "num_classes", "tokenizer",
                    "has_flip")
        missing = [k for k in required if k not in d]
        if missing:
            raise BadDataError(f"{where}: missing key(s) {missing}")
        shards = [ShardInfo(**s) for s in d["shards"]]
        for s in shards:
            check_shard_name(s.name, where)
        if sum(s.samples for s in shards) != d["sample_count"]:
            raise BadDataError(f"{where}: sample_count {d['sample_count']} != sum of shard counts "
                               f"{sum(s.samples for s in shards)}")
        return cls(**{**d, "shards": shards})


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> Path:
    path = Path(directory) / MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest.to_dict(), indent=1) + "\n").encode())
    return path


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def encode_sample(s: Sample, codebook_size: int) -> dict[str, bytes]:
    """Sample -> {field: bytes}. Ids are stored as uint16, so codebooks up to 65 536 fit."""
    if codebook_size > 65536:
        raise InvalidInput(f"codebook_size {codebook_size} does not fit uint16 token storage (max 65536)")
    if "." in s.key or "/" in s.key:
        raise InvalidInput(f"sample key {s.key!r} must not contain '.' or '/' (webdataset key rule)")
    out = {"tokens.npy": _npy_bytes(_as_ids(s.tokens, codebook_size, s.key))}
    if s.flip is not None:
        out["flip.npy"] = _npy_bytes(_as_ids(s.flip, codebook_size, s.key))
    if s.label is not None:
        out["cls"] = str(int(s.label)).encode()
    if s.text is not None:
        if s.text_mask is None or s.text_mask.shape != s.text.shape[:2]:
            raise InvalidInput(f"sample {s.key}: text_mask must have shape {s.text.shape[:2]} (N, T)")
        out["text.npy"] = _npy_bytes(s.text.astype(np.float16))
        out["text_mask.npy"] = _npy_bytes(s.text_mask.astype(bool))
    return out


def _as_ids(a, codebook_size: int, key: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise InvalidInput(f"sample {key}: token grid must be 2-D (h, w), got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= codebook_size):
        raise InvalidInput(f"sample {key}: token ids must be in [0, {codebook_size}), got [{a.min()}, {a.max()}]")
    return a.astype(np.uint16)


def write_shard(path: str | os.PathLike, samples: Iterable[Sample], codebook_size: int) -> int:
    """Writes one tar shard atomically with webdataset's TarWriter; returns the number of samples.

    TarWriter streams to a temporary file in the same directory, which is renamed once complete, so
    a reader never sees half a shard. Members carry mtime 0 and no owner, so the same samples always
    give the same bytes."""
    import webdataset as wds  # here, not at the top: it imports torch, which the format itself needs not

    n = 0
    with atomic_writer(path, fsync=True) as tmp, open(tmp, "wb") as f:  # fsync: a shard is durable once named
        with wds.TarWriter(f, encoder=False, mtime=0, user="", group="", mode=0o644) as tar:
            for s in samples:
                tar.write({"__key__": s.key, **encode_sample(s, codebook_size)})
                n += 1
    return n


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}


def load_npy(data: bytes) -> np.ndarray:
    """np.load for the small .npy members of a shard, ~10x faster: every sample of a shard has the
    same header, so the parsed (dtype, shape) is cached by the header's bytes (np.load re-parses it
    with ast each time). Falls back to np.load for unusual headers (Fortran order, version 2+)."""
    if data[:8] == b"\x93NUMPY\x01\x00" and len(data) >= 10:
        hlen = int.from_bytes(data[8:10], "little")
        header = data[10:10 + hlen]
        parsed = _NPY_HEADERS.get(header)
        if parsed is None:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if arr.flags.c_contiguous and len(_NPY_HEADERS) < 4096 and b"'fortran_order': False" in header:
                _NPY_HEADERS[header] = (arr.dtype, arr.shape, arr.size)
            return arr
        dtype, shape, count = parsed
        if len(data) - 10 - hlen != count * dtype.itemsize:
            raise InvalidInput(f"npy payload of {len(data) - 10 - hlen} bytes, expected {count * dtype.itemsize}")
        return np.frombuffer(data, dtype, count, offset=10 + hlen).reshape(shape)
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_sample(key: str, fields: dict[str, bytes], where: str) -> Sample:
    """{field: bytes} -> Sample; malformed fields raise BadDataError naming ``where`` and the key."""
    try:
        if "tokens.npy" not in fields:
            raise InvalidInput(f"no tokens.npy (fields: {sorted(fields)})")
        load = lambda name: load_npy(fields[name])  # noqa: E731
        return Sample(
            key=key,
            tokens=load("tokens.npy"),
            label=int(fields["cls"].decode()) if "cls" in fields else None,
            flip=load("flip.npy") if "flip.npy" in fields else None,
            text=load("text.npy") if "text.npy" in fields else None,
            text_mask=load("text_mask.npy") if "text_mask.npy" in fields else None,
        )
    except Exception as e:  # any decoding failure is bad data at a known place
        raise BadDataError(f"{where}, sample {key!r}: cannot decode ({e})") from e


def check_sample(s: Sample, m: Manifest, where: str) -> None:
    """Raises BadDataError naming shard and key if the sample disagrees with its manifest."""
    def bad(msg: str) -> BadDataError:
        return BadDataError(f"{where}, sample {s.key!r}: {msg}")

    side = m.latent_side
    grids = [("tokens", s.tokens)] + ([("flip", s.flip)] if m.has_flip else [])
    if m.has_flip and s.flip is None:
        raise bad("manifest says has_flip but flip.npy is missing")
    for name, g in grids:
        if g.shape != (side, side):
            raise bad(f"{name} shape {g.shape} != latent {side}x{side}")
        if g.dtype.kind not in "iu":
            raise bad(f"{name} dtype {g.dtype} is not an integer type")
        if g.size and int(g.max()) >= m.codebook_size:
            raise bad(f"{name} id {int(g.max())} >= codebook size {m.codebook_size}")
    if s.label is not None:
        if s.label < 0 or (m.num_classes is not None and s.label >= m.num_classes):
            raise bad(f"label {s.label} outside [0, {m.num_classes})")
    elif m.num_classes is not None:
        raise bad("class label (cls) missing")
    if m.text is not None:
        if s.text is None or s.text_mask is None:
            raise bad("text data expected (manifest.text is set) but text.npy / text_mask.npy missing")
        t, d = m.text["max_len"], m.text["dim"]
        if s.text.ndim != 3 or s.text.shape[1:] != (t, d) or s.text.shape[0] < 1:
            raise bad(f"text shape {s.text.shape} != (N>=1, {t}, {d})")
        if s.text_mask.shape != s.text.shape[:2]:
            raise bad(f"text_mask shape {s.text_mask.shape} != {s.text.shape[:2]}")
