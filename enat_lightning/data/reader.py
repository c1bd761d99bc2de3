"""Streaming readers over token shards: constant memory, any URL webdataset can open.

Two iterable datasets, both yielding ready batches (the DataLoader runs with ``batch_size=None``) so
each worker can emit an exact quota of batches:

  TrainStream  resampled shards -> shuffle buffer -> random original/flip -> batches; every rank
               yields exactly ``batches_per_epoch`` batches (DDP never waits on a rank that ran dry).
  ValStream    one fixed pass: the global sample range [0, N) is cut into contiguous pieces, one per
               (rank, worker), so each sample is read exactly once across the whole job.

Batch: {"tokens": int64 (B, L), "label": int64 (B,)} (+ "text": float32 (B, T, Dt), "text_mask":
bool (B, T) for text data). Randomness comes from torch.Generator seeded by (seed, start_step,
epoch, rank, worker): deterministic for a seed, and a resumed run (start_step > 0) gets a new order.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import tarfile
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .format import MANIFEST_NAME, BadDataError, Manifest, Sample, check_sample, decode_sample


# ----------------------------------------------------------------------------------------------
# Locating the manifest and the shards


def _is_url(s: str) -> bool:
    return "://" in s or s.startswith("pipe:")


def resolve_manifest(spec: str) -> tuple[Manifest, list[str], str]:
    """spec: a directory holding manifest.json, a manifest path/URL (``*.json``), or a shard URL /
    brace pattern (``.../train-{000000..000009}.tar``) whose directory holds manifest.json.
    Returns (manifest, shard URLs in manifest order, manifest location)."""
    spec = str(spec)
    if spec.endswith(".json"):
        where = spec
    elif not _is_url(spec) and os.path.isdir(spec):
        where = os.path.join(spec, MANIFEST_NAME)
    else:  # a shard pattern: the manifest sits beside the shards
        where = spec.rsplit("/", 1)[0] + "/" + MANIFEST_NAME if "/" in spec else MANIFEST_NAME
    if not _is_url(where) and not os.path.isfile(where):
        raise FileNotFoundError(f"no {MANIFEST_NAME} at {where} (not a token shard directory, or an "
                                f"interrupted `enat tokenize` run: rerun it to resume)")
    with _open(where) as f:
        try:
            d = json.loads(f.read().decode())
        except json.JSONDecodeError as e:
            raise BadDataError(f"{where}: not valid JSON ({e})") from e
    m = Manifest.from_dict(d, where)
    base = where.rsplit("/", 1)[0] if "/" in where else "."
    urls = [s.name if (_is_url(s.name) or os.path.isabs(s.name)) else f"{base}/{s.name}" for s in m.shards]
    if not spec.endswith(".json") and (_is_url(spec) or not os.path.isdir(spec)):
        # a pattern selects a subset of the manifest's shards (e.g. for a quick run)
        import braceexpand

        wanted = set(braceexpand.braceexpand(spec))
        keep = [i for i, u in enumerate(urls) if u in wanted]
        if not keep:
            raise FileNotFoundError(f"pattern {spec} matches none of the shards listed in {where}")
        m.shards = [m.shards[i] for i in keep]
        m.sample_count = sum(s.samples for s in m.shards)
        urls = [urls[i] for i in keep]
    return m, urls, where


def _open(url: str):
    if _is_url(url):
        import webdataset

        return webdataset.gopen(url, "rb")
    return open(url, "rb", buffering=1 << 20)


def _read_exact(read, n: int) -> bytes:
    """n bytes, or fewer only at end of stream (pipes and sockets may return short reads)."""
    data = read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def tar_members(stream) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of a tar stream, in order.

    A lean replacement for ``tarfile`` in stream mode, which costs ~50 us of Python per member (a
    shard sample has 2-5 members). Reads ustar/POSIX, GNU long names ('L') and pax headers ('x'),
    i.e. what Python's tarfile, GNU tar and webdataset write. Every header checksum is verified; a
    bad checksum or a short read raises tarfile.ReadError (corrupted / truncated shard)."""
    read = stream.read
    long_name: bytes | None = None
    while True:
        hdr = _read_exact(read, 512)
        if not hdr or hdr == bytes(512):
            return  # end of archive (a missing end block is caught by the manifest's sample count)
        if len(hdr) < 512:
            raise tarfile.ReadError(f"truncated header ({len(hdr)} of 512 bytes)")
        try:
            stored = int(hdr[148:156].replace(b"\0", b" ").strip(), 8)
            size = (int.from_bytes(hdr[125:136], "big") if hdr[124] & 0x80
                    else int(hdr[124:136].replace(b"\0", b" ").strip() or b"0", 8))
        except ValueError:
            stored, size = -1, 0
        if stored != sum(hdr) - sum(hdr[148:156]) + 256:
            raise tarfile.ReadError("bad header checksum (not a tar, or corrupted)")
        data = _read_exact(read, size)
        pad = _read_exact(read, -size % 512)
        if len(data) < size or len(pad) < -size % 512:
            raise tarfile.ReadError(f"member data truncated ({len(data)} of {size} bytes)")
        kind = hdr[156:157]
        if kind == b"L":  # GNU long name of the next member
            long_name = data.split(b"\0", 1)[0]
            continue
        if kind == b"x":  # pax extended header: only 'path' matters here
            for rec in data.decode("utf-8", "replace").split("\n"):
                kv = rec.split(" ", 1)[-1]
                if kv.startswith("path="):
                    long_name = kv[5:].encode()
            continue
        if kind in (b"0", b"\0", b"7"):
            name = hdr[:100].split(b"\0", 1)[0]
            if hdr[257:263] == b"ustar\0" and hdr[345] != 0:  # POSIX prefix field
                name = hdr[345:500].split(b"\0", 1)[0] + b"/" + name
            yield (long_name or name).decode("utf-8", "replace"), data
        long_name = None  # a long name applies to the next member only (g headers, dirs, links: skipped)


# ----------------------------------------------------------------------------------------------
# Reading one shard


class SkipCounter:
    """Samples dropped because they were bad, shared between DataLoader workers and the trainer
    process (a multiprocessing Value inherited by the workers)."""

    def __init__(self) -> None:
        self._v = mp.get_context().Value("q", 0)

    def add(self, n: int) -> None:
        with self._v.get_lock():
            self._v.value += n

    @property
    def value(self) -> int:
        return int(self._v.value)


def iter_shard(url: str, manifest: Manifest, expected: int | None = None,
               skip: SkipCounter | None = None) -> Iterator[tuple[int, Sample]]:
    """Yields (position in shard, checked sample) in stored order.

    A corrupted or truncated shard, or a bad sample, raises BadDataError naming the shard (and the
    sample key where there is one). With ``skip`` set, a bad sample is dropped with a warning and
    counted instead; a broken tar ends the shard early and its unread samples (per the manifest's
    count ``expected``) are counted as skipped."""
    last, seen = None, 0

    def fail(err: BadDataError, lost: int) -> None:
        if skip is None:
            raise err
        warnings.warn(f"skipping {lost} bad sample(s): {err}", stacklevel=3)
        skip.add(lost)

    try:
        stream = _open(url)
    except OSError as e:
        fail(BadDataError(f"shard {url}: cannot open ({e})"), max(1, expected or 0))
        return
    try:
        with stream:
            key, fields = None, {}
            for name, data in tar_members(stream):
                k, _, fld = name.rsplit("/", 1)[-1].partition(".")
                if key is not None and k != key:
                    sample = _checked(key, fields, url, manifest, fail)
                    last, seen, fields = key, seen + 1, {}
                    if sample is not None:
                        yield seen - 1, sample
                key = k
                fields[fld] = data
            if key is not None:
                sample = _checked(key, fields, url, manifest, fail)
                last, seen = key, seen + 1
                if sample is not None:
                    yield seen - 1, sample
    except (tarfile.TarError, OSError, EOFError) as e:
        after = f" after sample {last!r}" if last is not None else " at its start"
        fail(BadDataError(f"shard {url}: corrupted or truncated tar{after} ({e})"),
             max(1, (expected or 0) - seen))
        return
    if expected is not None and seen != expected:
        fail(BadDataError(f"shard {url}: {seen} samples but the manifest lists {expected} "
                          f"(truncated or replaced shard; last sample {last!r})"), max(0, expected - seen))


def _checked(key: str, fields: dict, url: str, manifest: Manifest, fail) -> Sample | None:
    try:
        s = decode_sample(key, fields, f"shard {url}")
        check_sample(s, manifest, f"shard {url}")
        return s
    except BadDataError as e:
        fail(e, 1)
        return None


# ----------------------------------------------------------------------------------------------
# Splitting, seeding, batching


def split_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """Contiguous [start, end) piece ``index`` of ``parts`` near-equal pieces of range(total)."""
    return total * index // parts, total * (index + 1) // parts


def make_generator(*parts: int) -> torch.Generator:
    """A torch.Generator seeded by a hash of ``parts`` (seed, start step, epoch, rank, worker), so
    nearby tuples give unrelated streams."""
    digest = hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def collate(samples: list[Sample], use_flip: list[bool], caption: list[int]) -> dict[str, torch.Tensor]:
    """Samples -> the training batch dict; ``use_flip[i]`` picks the flipped grid of sample i and
    ``caption[i]`` its caption (text data)."""
    grids = [s.flip if f else s.tokens for s, f in zip(samples, use_flip)]
    tokens = torch.from_numpy(np.stack([g.reshape(-1) for g in grids]).astype(np.int64))  # (B, L)
    label = torch.tensor([s.label if s.label is not None else 0 for s in samples], dtype=torch.int64)  # (B,)
    batch = {"tokens": tokens, "label": label}
    if samples[0].text is not None:
        batch["text"] = torch.from_numpy(
            np.stack([s.text[c] for s, c in zip(samples, caption)]).astype(np.float32))  # (B, T, Dt)
        batch["text_mask"] = torch.from_numpy(
            np.stack([s.text_mask[c] for s, c in zip(samples, caption)]).astype(bool))  # (B, T)
    return batch


@dataclass
class StreamConfig:
    batch_size: int
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0  # DataLoader workers; only used to size ValStream's __len__
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# Datasets


class TrainStream(IterableDataset):
    """Endless resampled stream cut into exactly ``batches_per_epoch`` batches per rank."""

    def __init__(self, manifest: Manifest, urls: list[str], cfg: StreamConfig, batches_per_epoch: int,
                 shuffle_buffer: int = 1000, use_flip: bool = True, skip: SkipCounter | None = None,
                 start_step: int = 0) -> None:
        if batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        self.manifest, self.urls, self.cfg = manifest, urls, cfg
        self.batches_per_epoch, self.shuffle_buffer = batches_per_epoch, max(1, shuffle_buffer)
        self.use_flip = use_flip and manifest.has_flip
        self.skip, self.start_step, self.epoch = skip, start_step, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def my_shards(self, worker: int, num_workers: int) -> list[int]:
        """Explicit node + worker splitter: slot (rank, worker) resamples from its own shards when
        there are enough of them, so ranks see disjoint data; otherwise from all shards."""
        slots = self.cfg.world_size * num_workers
        slot = self.cfg.rank * num_workers + worker
        n = len(self.urls)
        return list(range(slot, n, slots)) if n >= slots else list(range(n))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, num_workers = _worker()
        quota = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
        g = make_generator(self.cfg.seed, self.start_step, self.epoch, self.cfg.rank, worker)
        samples = self._shuffled(self._resampled(g, self.my_shards(worker, num_workers)), g)
        for _ in range(quota):
            chosen = [next(samples) for _ in range(self.cfg.batch_size)]
            flips = (torch.rand(len(chosen), generator=g) < 0.5).tolist() if self.use_flip else [False] * len(chosen)
            caps = [int(torch.randint(len(s.text), (1,), generator=g)) if s.text is not None else 0
                    for s in chosen]
            yield collate(chosen, flips, caps)

    def _resampled(self, g: torch.Generator, shards: list[int]) -> Iterator[Sample]:
        empty_in_a_row = 0
        while True:
            i = shards[int(torch.randint(len(shards), (1,), generator=g))]
            got = 0
            for _, s in iter_shard(self.urls[i], self.manifest, self.manifest.shards[i].samples, self.skip):
                got += 1
                yield s
            empty_in_a_row = 0 if got else empty_in_a_row + 1
            if empty_in_a_row > 4 * len(shards) + 8:  # every shard we can reach is unreadable
                raise BadDataError(f"no readable samples in {empty_in_a_row} consecutive shard reads "
                                   f"(e.g. {self.urls[i]})")

    def _shuffled(self, it: Iterator[Sample], g: torch.Generator) -> Iterator[Sample]:
        buf: list[Sample] = []
        picks: list[int] = []
        for s in it:
            if len(buf) < self.shuffle_buffer:
                buf.append(s)
                continue
            if not picks:  # draw slots in blocks: one generator call per 1024 samples, not per sample
                picks = torch.randint(len(buf), (1024,), generator=g).tolist()[::-1]
            j = picks.pop()
            buf[j], s = s, buf[j]
            yield s


class ValStream(IterableDataset):
    """One fixed pass: rank r, worker w reads the contiguous sample range
    split_range(split_range(N, world, r), workers, w); every sample exactly once overall."""

    def __init__(self, manifest: Manifest, urls: list[str], cfg: StreamConfig,
                 skip: SkipCounter | None = None) -> None:
        self.manifest, self.urls, self.cfg, self.skip = manifest, urls, cfg, skip

    def _ranges(self, num_workers: int) -> list[tuple[int, int]]:
        r0, r1 = split_range(self.manifest.sample_count, self.cfg.world_size, self.cfg.rank)
        return [(r0 + a, r0 + b) for a, b in (split_range(r1 - r0, num_workers, w) for w in range(num_workers))]

    def __len__(self) -> int:
        b = self.cfg.batch_size
        return sum(-(-(e - s) // b) for s, e in self._ranges(max(1, self.cfg.num_workers)))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, num_workers = _worker()
        start, end = self._ranges(num_workers)[worker]
        batch: list[Sample] = []
        for s in self.samples(start, end):
            batch.append(s)
            if len(batch) == self.cfg.batch_size:
                yield collate(batch, [False] * len(batch), [0] * len(batch))
                batch = []
        if batch:
            yield collate(batch, [False] * len(batch), [0] * len(batch))

    def samples(self, start: int, end: int) -> Iterator[Sample]:
        """Samples with global index in [start, end), reading only the shards that overlap it."""
        offset = 0
        for url, info in zip(self.urls, self.manifest.shards):
            lo, hi = offset, offset + info.samples
            offset = hi
            if hi <= start or lo >= end:
                continue
            for pos, s in iter_shard(url, self.manifest, info.samples, self.skip):
                if lo + pos >= end:
                    break
                if lo + pos >= start:
                    yield s
