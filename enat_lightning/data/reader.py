"""Streaming readers over token shards, built on webdataset: constant memory, any URL it can open.

webdataset does the I/O and the stream plumbing: ``gopen`` opens local paths, ``https://``,
``pipe:`` ...; its tar iterators (``tariterators.tar_file_expander`` + ``group_by_keys``, the two
halves of ``wds.tarfile_to_samples``) turn a shard into samples; ``ResampledShards``, ``shuffle``,
``batched`` and ``DataPipeline.with_epoch`` make the training stream. This module adds what the
library leaves to its users: the manifest (per-shard counts expose truncated shards; contiguous
validation ranges), decoding + checking against the manifest, errors that name shard and sample,
and seeding by (seed, resume step, epoch, rank, worker).

Both datasets yield ready batches (the DataLoader runs with ``batch_size=None``) so each worker can
emit an exact quota of batches:

  TrainStream  resampled shards -> shuffle buffer -> random original/flip -> batches; every rank
               yields exactly ``batches_per_epoch`` batches (DDP never waits on a rank that ran dry).
  ValStream    one fixed pass: the global sample range [0, N) is cut into contiguous pieces, one per
               (rank, worker), so each sample is read exactly once across the whole job.

Batch: {"tokens": int64 (B, L), "label": int64 (B,)} (+ "text": float32 (B, T, Dt), "text_mask":
bool (B, T) for text data).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import random
import tarfile
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from webdataset import tariterators
from webdataset.shardlists import expand_urls

from enat_lightning.seeding import mix_seed

from .format import MANIFEST_NAME, BadDataError, Manifest, Sample, check_sample, decode_sample
from enat_lightning.errors import InvalidInput, MissingInput


# ----------------------------------------------------------------------------------------------
# Locating the manifest and the shards


def _is_url(s: str) -> bool:
    return "://" in s or s.startswith("pipe:")


# Who can name the exact command that builds the shards at a path (the demo registers its data sets,
# from above: this package never imports the demo). fn(manifest location) -> command or None.
SHARDS_COMMANDS: list = []


def register_shards_command(fn) -> None:
    SHARDS_COMMANDS.append(fn)


def _missing_manifest(where: str) -> MissingInput:
    for fn in SHARDS_COMMANDS:
        command = fn(where)
        if command:
            return MissingInput(f"no {MANIFEST_NAME} at {where}: build these shards with `{command}`")
    return MissingInput(f"no {MANIFEST_NAME} at {where}: build the token shards first: your images with `enat "
                        f"tokenize imagefolder|list|coco ... --out DIR`, the demo data with `enat tokenize demo` "
                        f"(or `make demo`), with --dataset mnist|digits to pick the set; an interrupted `enat tokenize` "
                        f"run: rerun it to resume")


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
        raise _missing_manifest(where)
    with wds.gopen(where, "rb") as f:
        try:
            d = json.loads(f.read().decode())
        except json.JSONDecodeError as e:
            raise BadDataError(f"{where}: not valid JSON ({e})") from e
    m = Manifest.from_dict(d, where)
    base = where.rsplit("/", 1)[0] if "/" in where else "."
    urls = [f"{base}/{s.name}" for s in m.shards]  # plain names only (Manifest.from_dict -> check_shard_name)
    if not spec.endswith(".json") and (_is_url(spec) or not os.path.isdir(spec)):
        # a pattern selects a subset of the manifest's shards (e.g. for a quick run); webdataset's
        # own expansion, so `::`-joined lists and ${WDS_...} variables work as in wds.WebDataset
        wanted = set(expand_urls(spec))
        keep = [i for i, u in enumerate(urls) if u in wanted]
        if not keep:
            raise MissingInput(f"pattern {spec} matches none of the shards listed in {where}")
        m.shards = [m.shards[i] for i in keep]
        m.sample_count = sum(s.samples for s in m.shards)
        urls = [urls[i] for i in keep]
    return m, urls, where


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


# What reading a tar can raise: tarfile errors (bad header checksum at the start, short member
# data), I/O errors of the stream (also a failed `pipe:` command), and webdataset's ValueError for
# a file name repeated within a sample.
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


def _reason(e: BaseException) -> str:
    """The error text, without the stream objects webdataset appends to ``args`` on the way up."""
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror + (f": {e.filename}" if e.filename else "")
    else:
        text = str(e.args[0]).split(" @ <", 1)[0] if e.args else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def iter_shard(url: str, manifest: Manifest, expected: int | None = None,
               skip: SkipCounter | None = None) -> Iterator[tuple[int, Sample]]:
    """Yields (position in shard, checked sample) in stored order; positions count skipped samples
    too, so they stay the stored positions.

    The tar is read by webdataset (``gopen`` -> ``tar_file_expander`` -> ``group_by_keys``) with its
    re-raising handler; every error is turned here into a BadDataError naming the shard (and the
    last good sample key). A corrupted or truncated shard, or a bad sample, raises it. With ``skip``
    set, a bad sample is dropped with a warning and counted instead; a broken tar ends the shard
    early and its unread samples (per the manifest's count ``expected``) are counted as skipped.
    Python's stream-mode tarfile ends quietly at a garbage header past the first, so the count
    check against ``expected`` is what catches a shard cut on a member boundary or damaged inside."""
    last, seen = None, 0

    def fail(err: BadDataError, lost: int) -> None:
        if skip is None:
            raise err
        warnings.warn(f"skipping {lost} bad sample(s): {err}", stacklevel=3)
        skip.add(lost)

    def broken(e: BaseException) -> BadDataError:
        after = f" after sample {last!r}" if last is not None else " at its start"
        return BadDataError(f"shard {url}: corrupted or truncated tar{after} ({_reason(e)})")

    try:
        stream = wds.gopen(url, "rb")
    except Exception as e:  # gopen raises whatever its scheme handler raises
        fail(BadDataError(f"shard {url}: cannot open ({_reason(e)})"), max(1, expected or 0))
        return
    handler = wds.reraise_exception  # errors surface here, where the shard and position are known
    files = tariterators.tar_file_expander([{"url": url, "stream": stream}], handler=handler, eof_value=None)
    groups = tariterators.group_by_keys(files, handler=handler)
    try:
        for raw in groups:
            key = raw["__key__"].rsplit("/", 1)[-1]
            fields = {k: v for k, v in raw.items() if not k.startswith("__")}
            sample = _checked(key, fields, url, manifest, fail)
            last, seen = key, seen + 1
            if sample is not None:
                yield seen - 1, sample
        stream.close()  # a `pipe:` stream reports its command's exit status here
    except BadDataError:
        raise
    except _TAR_ERRORS as e:
        fail(broken(e), max(1, (expected or 0) - seen))
        return
    finally:  # also when the consumer stops early (a validation range ends inside the shard)
        groups.close()
        with contextlib.suppress(OSError):
            stream.close()
    if expected is not None and seen != expected:
        fail(BadDataError(f"shard {url}: {seen} samples but the manifest lists {expected} "
                          f"(truncated, damaged or replaced shard; last sample {last!r})"), max(0, expected - seen))


def _checked(key: str, fields: dict, url: str, manifest: Manifest, fail) -> Sample | None:
    try:
        s = decode_sample(key, fields, f"shard {url}")
        check_sample(s, manifest, f"shard {url}")
        return s
    except BadDataError as e:
        fail(e, 1)
        return None


def _read_shards(src: Iterable[dict], manifest: Manifest, counts: dict[str, int], skip: SkipCounter | None,
                 give_up_after: int | None = None) -> Iterator[Sample]:
    """Pipeline stage: {"url"[, "start", "stop"]} shard items -> checked samples (stored positions
    [start, stop) only, when given). With ``give_up_after``, that many shard reads in a row without
    a single good sample is an error (an endless resampled stream over unreadable data would
    otherwise spin forever under skip_bad_samples)."""
    empty_in_a_row = 0
    for item in src:
        url, start, stop = item["url"], item.get("start", 0), item.get("stop")
        got = 0
        for pos, s in iter_shard(url, manifest, counts[url], skip):
            if stop is not None and pos >= stop:
                break
            if pos >= start:
                got += 1
                yield s
        empty_in_a_row = 0 if got else empty_in_a_row + 1
        if give_up_after is not None and empty_in_a_row > give_up_after:
            raise BadDataError(f"no readable samples in {empty_in_a_row} consecutive shard reads "
                               f"(e.g. {url})")


read_shards = wds.pipelinefilter(_read_shards)


# ----------------------------------------------------------------------------------------------
# Splitting, seeding, batching


def split_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """Contiguous [start, end) piece ``index`` of ``parts`` near-equal pieces of range(total)."""
    return total * index // parts, total * (index + 1) // parts


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


def _collate_plain(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Validation: original orientation, first caption."""
    return collate(samples, [False] * len(samples), [0] * len(samples))


class _AugmentingCollate:
    """Training collation: original or flipped grid and one caption per sample, drawn from a
    torch.Generator (one call per batch, not per sample)."""

    def __init__(self, use_flip: bool, seed: int) -> None:
        self.use_flip, self.g = use_flip, torch.Generator().manual_seed(seed)

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        n = len(samples)
        flips = (torch.rand(n, generator=self.g) < 0.5).tolist() if self.use_flip else [False] * n
        if samples[0].text is not None:
            u = torch.rand(n, generator=self.g).tolist()
            caps = [int(x * len(s.text)) for x, s in zip(u, samples)]
        else:
            caps = [0] * n
        return collate(samples, flips, caps)


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
    """Endless resampled stream cut into exactly ``batches_per_epoch`` batches per rank.

    Each (rank, worker) builds, inside its process, the webdataset pipeline
    ResampledShards(its shards) -> read_shards -> shuffle -> batched, ``with_epoch`` its quota of
    batches. The node/worker split is explicit (``my_shards``) rather than wds.split_by_node /
    split_by_worker: the rank comes from the trainer (or a test), not from the environment those
    read, and with fewer shards than slots every slot must still resample something."""

    def __init__(self, manifest: Manifest, urls: list[str], cfg: StreamConfig, batches_per_epoch: int,
                 shuffle_buffer: int = 1000, use_flip: bool = True, skip: SkipCounter | None = None,
                 start_step: int = 0) -> None:
        if batches_per_epoch < 1:
            raise InvalidInput(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        self.manifest, self.urls, self.cfg = manifest, urls, cfg
        self.batches_per_epoch, self.shuffle_buffer = batches_per_epoch, max(1, shuffle_buffer)
        self.use_flip = use_flip and manifest.has_flip
        self.skip, self.start_step, self.epoch = skip, start_step, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def my_shards(self, worker: int, num_workers: int) -> list[int]:
        """Node + worker split: slot (rank, worker) resamples from its own shards when there are
        enough of them, so ranks see disjoint data; otherwise from all shards."""
        slots = self.cfg.world_size * num_workers
        slot = self.cfg.rank * num_workers + worker
        n = len(self.urls)
        return list(range(slot, n, slots)) if n >= slots else list(range(n))

    def pipeline(self, worker: int, num_workers: int) -> wds.DataPipeline:
        """The webdataset pipeline of one (rank, worker) for the current epoch."""
        quota = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
        base = (self.cfg.seed, self.start_step, self.epoch, self.cfg.rank, worker)
        mine = [self.urls[i] for i in self.my_shards(worker, num_workers)]
        counts = {u: s.samples for u, s in zip(self.urls, self.manifest.shards)}
        pipeline = wds.DataPipeline(
            # deterministic: the seed is ours alone (no pid, time or environment mixed in)
            wds.ResampledShards(mine, seed=mix_seed(*base, 0), worker_seed=lambda: 0, deterministic=True),
            read_shards(self.manifest, counts, self.skip, give_up_after=4 * len(mine) + 8),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(mix_seed(*base, 1))),
            wds.batched(self.cfg.batch_size, collation_fn=_AugmentingCollate(self.use_flip, mix_seed(*base, 2)),
                        partial=False),
        )
        return pipeline.with_epoch(nbatches=quota)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, num_workers = _worker()
        if worker >= self.batches_per_epoch:  # more workers than batches: this one has no quota
            return iter(())
        return iter(self.pipeline(worker, num_workers))


class ValStream(IterableDataset):
    """One fixed pass: rank r, worker w reads the contiguous sample range
    split_range(split_range(N, world, r), workers, w); every sample exactly once overall.

    wds.split_by_node / split_by_worker deal out whole shards, which cannot give every rank the same
    number of samples (Lightning's DDP validation needs near-equal shares) when shards are uneven;
    the ranges are cut here and the samples read with webdataset's tar iteration."""

    def __init__(self, manifest: Manifest, urls: list[str], cfg: StreamConfig,
                 skip: SkipCounter | None = None) -> None:
        self.manifest, self.urls, self.cfg, self.skip = manifest, urls, cfg, skip

    def _ranges(self, num_workers: int) -> list[tuple[int, int]]:
        r0, r1 = split_range(self.manifest.sample_count, self.cfg.world_size, self.cfg.rank)
        return [(r0 + a, r0 + b) for a, b in (split_range(r1 - r0, num_workers, w) for w in range(num_workers))]

    def __len__(self) -> int:
        b = self.cfg.batch_size
        return sum(-(-(e - s) // b) for s, e in self._ranges(max(1, self.cfg.num_workers)))

    def shard_items(self, start: int, end: int) -> list[dict]:
        """{"url", "start", "stop"} (positions within the shard) covering global samples [start, end)."""
        items, offset = [], 0
        for url, info in zip(self.urls, self.manifest.shards):
            lo, hi = offset, offset + info.samples
            offset = hi
            if hi > start and lo < end:
                items.append({"url": url, "start": max(start, lo) - lo, "stop": min(end, hi) - lo})
        return items

    def samples(self, start: int, end: int) -> Iterator[Sample]:
        """Samples with global index in [start, end), reading only the shards that overlap it."""
        counts = {u: s.samples for u, s in zip(self.urls, self.manifest.shards)}
        return _read_shards(self.shard_items(start, end), self.manifest, counts, self.skip)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, num_workers = _worker()
        start, end = self._ranges(num_workers)[worker]
        counts = {u: s.samples for u, s in zip(self.urls, self.manifest.shards)}
        items = self.shard_items(start, end)
        return iter(wds.DataPipeline(
            lambda: iter(items),  # a callable source (a list argument would be taken as stages)
            read_shards(self.manifest, counts, self.skip),
            wds.batched(self.cfg.batch_size, collation_fn=_collate_plain, partial=True),
        ))
