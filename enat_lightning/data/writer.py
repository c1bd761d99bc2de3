"""ShardSetWriter: writes a directory of token shards + manifest, resumable shard by shard.

Shard k always holds the inputs [k * shard_size, (k + 1) * shard_size) of a fixed input order (minus
unreadable ones), so an interrupted run restarts at the first unfinished shard. Progress lives in
``.progress.json`` (rewritten atomically after every shard); ``manifest.json`` appears only when the
whole set is finished, so readers never see a partial dataset.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from enat_lightning.fileio import OutputLock, lock_path

from .format import MANIFEST_NAME, Manifest, Sample, ShardInfo, atomic_write_bytes, write_manifest, write_shard
from enat_lightning.errors import InvalidInput

PROGRESS_NAME = ".progress.json"


class ShardSetWriter:
    """Args:
        out_dir: target directory (created).
        job: JSON-able description of the work (input list hash, tokenizer identity, resolution,
            shard size, ...). A progress file with the same job is resumed; a different job in a
            directory that already holds shards is refused.
        manifest_fields: Manifest fields other than sample_count / shards.

    The writer holds ``out_dir/.lock`` (``fileio.OutputLock``, the package's one output lock) from
    construction to ``finish()`` (or ``release()``): a second tokenize run into the same folder is
    refused instead of both reporting success over each other's shards.
    """

    def __init__(self, out_dir: str | os.PathLike, job: dict, *, codebook_size: int, latent_side: int,
                 num_classes: int | None, tokenizer: dict, has_flip: bool, text: dict | None = None,
                 source: dict | None = None, prefix: str = "shard") -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(lock_path(self.out, folder=True), what=f"shard folder {self.out}",
                                holder="tokenize run").acquire()
        try:
            self._setup(job, codebook_size=codebook_size, latent_side=latent_side, num_classes=num_classes,
                        tokenizer=tokenizer, has_flip=has_flip, text=text, source=source, prefix=prefix)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Gives up the folder's lock (``finish`` does it; also for a run that stops with an error)."""
        self._lock.release()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def _setup(self, job: dict, *, codebook_size: int, latent_side: int, num_classes: int | None, tokenizer: dict,
               has_flip: bool, text: dict | None, source: dict | None, prefix: str) -> None:
        self.job = json.loads(json.dumps(job))  # normalise (tuples -> lists) for comparison
        self.prefix = prefix
        self.fields = dict(codebook_size=codebook_size, latent_side=latent_side, num_classes=num_classes,
                           tokenizer=tokenizer, has_flip=has_flip, text=text, source=source or {})
        self.shards: list[ShardInfo] = []
        self.complete = False
        self._load_state()

    def _load_state(self) -> None:
        manifest, progress = self.out / MANIFEST_NAME, self.out / PROGRESS_NAME
        if manifest.exists():
            d = json.loads(manifest.read_text())
            if d.get("source", {}).get("job") == self.job:
                self.shards = [ShardInfo(**s) for s in d["shards"]]
                self.complete = True
                return
            raise InvalidInput(f"{self.out} already holds a finished shard set made by a different job "
                             f"(see {manifest}); choose another output directory or delete it")
        if progress.exists():
            d = json.loads(progress.read_text())
            if d.get("job") != self.job:
                raise InvalidInput(f"{progress} belongs to a different tokenize job (other inputs, "
                                 f"tokenizer or settings); delete {self.out} or choose another output")
            self.shards = [ShardInfo(**s) for s in d["shards"]]
            # drop stray shards past the recorded progress (written but not recorded before a crash)
            for p in self.out.glob(f"{self.prefix}-*.tar"):
                if p.name not in {s.name for s in self.shards}:
                    p.unlink()
        elif any(self.out.glob(f"{self.prefix}-*.tar")):
            raise InvalidInput(f"{self.out} holds shards but no {PROGRESS_NAME} or {MANIFEST_NAME}; "
                             f"delete it or choose another output directory")

    @property
    def done_shards(self) -> int:
        """Finished shards: resume from shard number ``done_shards``."""
        return len(self.shards)

    def shard_name(self, index: int) -> str:
        return f"{self.prefix}-{index:06d}.tar"

    def add_shard(self, samples: list[Sample]) -> ShardInfo:
        """Writes the next shard (possibly empty-of-samples inputs are skipped by the caller)."""
        if self.complete:
            raise RuntimeError(f"{self.out} is already finished")
        name = self.shard_name(len(self.shards))
        n = write_shard(self.out / name, samples, self.fields["codebook_size"])
        self.shards.append(ShardInfo(name=name, samples=n))
        progress = {"job": self.job, "shards": [s.__dict__ for s in self.shards]}
        atomic_write_bytes(self.out / PROGRESS_NAME, json.dumps(progress, indent=1).encode())
        return self.shards[-1]

    def finish(self) -> Manifest:
        """Writes manifest.json (empty shards are dropped from the list) and removes the progress."""
        shards = [s for s in self.shards if s.samples > 0]
        for s in self.shards:
            if s.samples == 0 and (self.out / s.name).exists():
                (self.out / s.name).unlink()
        m = Manifest(sample_count=sum(s.samples for s in shards), shards=shards,
                     **{**self.fields, "source": {**self.fields["source"], "job": self.job}})
        if not self.complete:
            write_manifest(self.out, m)
            (self.out / PROGRESS_NAME).unlink(missing_ok=True)
            self.complete = True
        self.release()
        return m
