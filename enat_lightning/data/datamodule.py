"""TokenShardDataModule: streams pretokenized shards (format.py) into training batches.

Memory stays constant in the dataset size: workers hold one open shard and a shuffle buffer. Under
DDP every rank yields exactly ``batches_per_epoch`` batches and reads its own slice of the shards.
"""
from __future__ import annotations

import os
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader

from .format import Manifest
from .reader import SkipCounter, StreamConfig, TrainStream, ValStream, resolve_manifest
from enat_lightning.errors import InvalidInput


# Our streams hand every worker an exact batch quota, so their __len__ is exact; Lightning's generic
# warning about IterableDataset lengths under multi-worker loading does not apply to them.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


class _EpochLoader(DataLoader):
    """A DataLoader that tells its stream which pass it is on, so every epoch draws a new order.

    Workers are not persistent, so each ``iter()`` ships the dataset (with the new epoch) to fresh
    workers."""

    def __iter__(self):
        if isinstance(self.dataset, TrainStream):
            self.dataset.set_epoch(getattr(self, "_passes", 0))
            self._passes = getattr(self, "_passes", 0) + 1
        return super().__iter__()


class TokenShardDataModule(L.LightningDataModule):
    """Batches {"tokens": int64 (B, L), "label": int64 (B,)} (+ "text" float32 (B, T, Dt),
    "text_mask" bool (B, T) for text shards) from token shards.

    Args:
        train_shards: a shard directory (holding manifest.json), a manifest path/URL, or a shard URL
            pattern such as ``https://host/in256/train-{000000..000127}.tar`` (manifest beside it).
        val_shards: the same for validation (a fixed, non-resampled pass), or None.
        batch_size: per-rank batch size.
        num_workers: DataLoader workers per rank (0 = read in the training process).
        shuffle_buffer: samples held for shuffling (per worker).
        seed: base seed; the order is a function of (seed, resume step, epoch, rank, worker).
        batches_per_epoch: batches every rank yields per epoch; default = train samples /
            (batch_size * world_size), rounded up.
        use_flip: pick the original or flipped ids at random (only if the shards store flips).
        skip_bad_samples: drop bad samples with a warning and count them (``skipped_samples``)
            instead of stopping with an error naming the shard and sample.
        grid, codebook_size, num_classes: the network's token grid side, codebook size and class
            count (``enat fit`` gives them from ``model.net``); shards whose manifest disagrees are
            refused in ``setup`` -- the one check of data against the model.
        tokenizer: the tokenizer the run decodes with (``{class_path, init_args}`` or an alias: 'demo', a
            checkpoint path; as in ``enat tokenize``); shards whose manifest records another tokenizer
            (kind or weights hash) are refused, since token ids of different tokenizers mean different
            things, and so is a tokenizer whose codebook is not ``codebook_size``.
        rank, world_size: override the trainer's (tests simulate ranks with them).
    """

    # A resumed run reseeds the stream by its global step (``train_dataset``), so Lightning's mid-epoch resume
    # warning does not apply (read by ``quiet.quiet_resume_warnings``).
    reshuffles_on_resume = True

    def __init__(self, train_shards: str, val_shards: str | None = None, batch_size: int = 64,
                 val_batch_size: int | None = None, num_workers: int = 2, shuffle_buffer: int = 1000,
                 seed: int = 0, batches_per_epoch: int | None = None, use_flip: bool = True,
                 skip_bad_samples: bool = False, codebook_size: int | None = None,
                 grid: int | None = None, num_classes: int | None = None,
                 tokenizer: str | dict | None = None,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        self._manifests: dict[str, tuple[Manifest, list[str], str]] = {}
        self._skip: SkipCounter | None = None

    # ---- manifests and compatibility ----

    def manifest(self, split: str = "train") -> Manifest:
        return self._resolve(split)[0]

    def _resolve(self, split: str) -> tuple[Manifest, list[str], str]:
        spec = self.hparams.train_shards if split == "train" else self.hparams.val_shards
        if spec is None:
            raise InvalidInput(f"no {split} shards configured")
        if split not in self._manifests:
            self._manifests[split] = resolve_manifest(spec)
        return self._manifests[split]

    def check_compatible(self, codebook_size: int | None = None, grid: int | None = None,
                         num_classes: int | None = None) -> None:
        """Refuses shards made for another model (called by ``setup``): InvalidInput naming the key, the
        manifest and both values. The model's codebook and grid must equal the manifest's; its class
        count must be at least the manifest's (labels are checked per sample against the manifest)."""
        splits = ["train"] + (["val"] if self.hparams.val_shards else [])
        for split in splits:
            m, _, where = self._resolve(split)
            if codebook_size is not None and m.codebook_size != codebook_size:
                raise InvalidInput(f"codebook {m.codebook_size} in {where} vs model {codebook_size} "
                                   f"(model.net.init_args.codebook_size): tokenize with that codebook or fix the model")
            if grid is not None and m.latent_side != grid:
                raise InvalidInput(f"grid {m.latent_side}x{m.latent_side} in {where} vs model {grid}x{grid} "
                                   f"(model.net.init_args.grid): tokenize at that grid or fix the model")
            if num_classes is not None and m.num_classes is not None and m.num_classes > num_classes:
                raise InvalidInput(f"{m.num_classes} classes in {where} vs model {num_classes} "
                                   f"(model.net.init_args.num_classes)")

    def check_tokenizer(self, spec: str | dict) -> None:
        """Refuses shards tokenized with a tokenizer other than ``spec`` (ValueError naming both)."""
        from enat_lightning.tokenizers import check_codebook_size, load_tokenizer, spec_text

        tok = load_tokenizer(spec)
        if self.hparams.codebook_size is not None:
            check_codebook_size(tok, self.hparams.codebook_size, "data.codebook_size (= model.net codebook_size)",
                                f"data.tokenizer {spec_text(spec)}")
        want = tok.identity()
        splits = ["train"] + (["val"] if self.hparams.val_shards else [])
        for split in splits:
            m, _, where = self._resolve(split)
            have = m.tokenizer or {}
            if not have:
                continue  # shards written without a tokenizer record (e.g. synthetic tokens)
            same_kind = have.get("kind") == want.get("kind")
            h_have, h_want = have.get("weights_sha256"), want.get("weights_sha256")
            if not same_kind or (h_have and h_want and h_have != h_want):
                raise InvalidInput(
                    f"shards in {where} were made with tokenizer {have.get('kind')} (weights sha256 "
                    f"{str(h_have)[:12]}) but data.tokenizer={spec!r} is {want.get('kind')} (weights sha256 "
                    f"{str(h_want)[:12]}): re-tokenize the data or point data.tokenizer at the right file")

    @property
    def skipped_samples(self) -> int:
        """Bad samples dropped so far (all workers of this rank) with ``skip_bad_samples``. Log it
        from the LightningModule: ``self.log("data/skipped_samples", float(dm.skipped_samples))``."""
        return 0 if self._skip is None else self._skip.value

    # ---- Lightning hooks ----

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.skip_bad_samples and self._skip is None:
            # created here, in the (possibly launched) training process, and inherited by workers
            self._skip = SkipCounter()
        self.check_compatible(self.hparams.codebook_size, self.hparams.grid, self.hparams.num_classes)
        if self.hparams.tokenizer is not None:
            self.check_tokenizer(self.hparams.tokenizer)

    def _rank_world(self) -> tuple[int, int]:
        hp = self.hparams
        trainer = self._trainer_or_none()
        rank = hp.rank if hp.rank is not None else (
            trainer.global_rank if trainer is not None else int(os.environ.get("RANK", 0)))
        world = hp.world_size if hp.world_size is not None else (
            trainer.world_size if trainer is not None else int(os.environ.get("WORLD_SIZE", 1)))
        if not 0 <= rank < world:
            raise InvalidInput(f"rank {rank} outside world size {world}")
        return rank, world

    def _trainer_or_none(self):
        return getattr(self, "trainer", None)

    def _stream_cfg(self, batch_size: int) -> StreamConfig:
        rank, world = self._rank_world()
        return StreamConfig(batch_size=batch_size, rank=rank, world_size=world,
                            num_workers=self.hparams.num_workers, seed=self.hparams.seed)

    def train_dataset(self) -> TrainStream:
        m, urls, _ = self._resolve("train")
        cfg = self._stream_cfg(self.hparams.batch_size)
        per_epoch = self.hparams.batches_per_epoch or max(
            1, -(-m.sample_count // (cfg.batch_size * cfg.world_size)))
        trainer = self._trainer_or_none()
        # a resumed run starts at a later global step, which reseeds the stream: no repeated order
        start = int(trainer.global_step) if trainer is not None else 0
        return TrainStream(m, urls, cfg, per_epoch, self.hparams.shuffle_buffer, self.hparams.use_flip,
                           self._skip, start_step=start)

    def val_dataset(self) -> ValStream:
        m, urls, _ = self._resolve("val")
        return ValStream(m, urls, self._stream_cfg(self.hparams.val_batch_size or self.hparams.batch_size),
                         self._skip)

    def _loader(self, dataset) -> DataLoader:
        nw = self.hparams.num_workers
        return _EpochLoader(dataset, batch_size=None, num_workers=nw, persistent_workers=False,
                            pin_memory=torch.cuda.is_available(), prefetch_factor=4 if nw else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_dataset()) if self.hparams.val_shards else []

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()
