"""Sampling through Lightning: ``Trainer.predict`` + a prediction writer (the library behind `enat sample`).

    SamplingModule.predict_step   one chunk of samples (``sampling.runner.sample_chunk``)
    ChunkData                     this rank's unfinished chunks (a resume skips the finished ones)
    ChunkWriter                   writes each chunk file atomically; at the end rank 0 assembles
                                  samples.npz, grid.png and the PNGs (``sampling.runner.assemble``)

Devices, processes and launchers are Lightning's: one process (CPU or one GPU), or DDP over every
GPU (Lightning re-launches the command per GPU), or ``torchrun`` / SLURM. Chunk c is made by rank
c mod W, and sample i draws from a generator seeded by (seed, i), so the files do not depend on W.
Layout and overwrite rules: ``sampling/runner.py``.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from enat_lightning.devices import check_device
from enat_lightning.errors import Terminated, UserError
from enat_lightning.sampling import io as sio
from enat_lightning.sampling.runner import (SampleRun, assemble, check_memory, check_out_dir, chunk_path, chunk_ranges,
                                            manifest, prepare_out_dir, sample_chunk, todo_chunks)
from enat_lightning.sampling.settings import SamplerSettings


class SamplingModule(pl.LightningModule):
    """A generator network (+ optional tokenizer) whose ``predict_step`` samples one chunk."""

    def __init__(self, net: torch.nn.Module, settings: SamplerSettings, seed: int, tokenizer=None, conditions=None):
        super().__init__()
        self.net, self.settings, self.seed = net, settings, seed
        self.conditions = conditions  # row-sliceable (e.g. Captions), kept on the CPU; None: the labels
        # an nn.Module tokenizer (VQGAN) is a submodule, so Lightning moves it to the device with the net
        self.tokenizer = tokenizer
        self.cfg = net.cfg

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        if int(batch["chunk"]) < 0:  # this rank has nothing (left) to do, see _Chunks
            return {"chunk": -1}
        start = int(batch["start"])
        cond = None if self.conditions is None else self.conditions[start:start + len(batch["labels"])]
        out = sample_chunk(self.net, self.tokenizer, batch["labels"], start, self.settings, self.seed, cond)
        return {"chunk": int(batch["chunk"]), "labels": batch["labels"], **out}


class _Chunks(Dataset):
    """The chunks to make; a rank with none gets one no-op item (chunk -1): Lightning skips an
    empty predict loop with its hooks, and rank 0 must still assemble and every rank meet at the
    writer's barrier."""

    def __init__(self, labels: list[int], ranges: list[tuple[int, int]], chunks: list[int]):
        self.labels, self.ranges, self.chunks = labels, ranges, chunks or [-1]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> dict:
        c = self.chunks[k]
        if c < 0:
            return {"chunk": -1, "start": 0, "labels": torch.zeros(0, dtype=torch.long)}
        start, stop = self.ranges[c]
        return {"chunk": c, "start": start, "labels": torch.tensor(self.labels[start:stop], dtype=torch.long)}


class ChunkData(pl.LightningDataModule):
    """One item = one whole chunk (``batch_size=None``). ``setup`` readies the folder on rank 0 (all
    ranks checked it before any started, ``check_out_dir``), waits for it, then lists this rank's
    unfinished chunks."""

    def __init__(self, labels: list[int], out_dir: Path, run: SampleRun, run_manifest: dict, mode: str,
                 extra_files: dict[str, bytes] | None = None):
        super().__init__()
        self.labels, self.out_dir, self.run, self.run_manifest, self.mode = labels, Path(out_dir), run, run_manifest, mode
        self.extra_files = extra_files or {}
        self.ranges = chunk_ranges(len(labels), run.batch_size)
        self.todo: list[int] = []

    def setup(self, stage: str) -> None:
        if self.trainer.is_global_zero:
            prepare_out_dir(self.out_dir, self.run_manifest, self.mode)
            for name, data in self.extra_files.items():
                sio.atomic_write_bytes(self.out_dir / name, data)
        self.trainer.strategy.barrier("enat_sample_prepared")
        self.todo = todo_chunks(self.out_dir, len(self.labels), self.run.batch_size,
                                self.trainer.global_rank, self.trainer.world_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_Chunks(self.labels, self.ranges, self.todo), batch_size=None, shuffle=False)


class ChunkWriter(BasePredictionWriter):
    """Writes every predicted chunk to ``chunks/chunk_<c>.npz`` (atomic) as it comes; after the last
    chunk of every rank, rank 0 assembles the folder. ``on_chunk(c)`` runs after chunk c is written
    (tests interrupt a run with it)."""

    def __init__(self, out_dir: Path, n_chunks: int, *, save_images: bool, grid_size: int,
                 on_chunk: Callable[[int], None] | None = None):
        super().__init__("batch")
        self.out_dir, self.n_chunks, self.save_images, self.grid_size = Path(out_dir), n_chunks, save_images, grid_size
        self.on_chunk = on_chunk
        self.written: list[int] = []  # chunks this rank made
        self.made = 0  # chunks all ranks made (the others were resumed)
        self.result: dict | None = None

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        c = prediction["chunk"]
        if c < 0:
            return
        arrays = {"tokens": prediction["tokens"].cpu().numpy().astype(np.int64),
                  "labels": prediction["labels"].cpu().numpy().astype(np.int64)}
        if "images" in prediction:
            arrays["images"] = prediction["images"].cpu().numpy()
        sio.save_npz(chunk_path(self.out_dir, c), **arrays)
        self.written.append(c)
        if self.on_chunk is not None:
            self.on_chunk(c)
        if trainer.received_sigterm:  # Lightning's handler only records SIGTERM: stop here, chunks are saved
            raise Terminated(f"stopped by SIGTERM after chunk {c} ({len(self.written)} chunk(s) written by this "
                             f"process to {self.out_dir / 'chunks'}); rerun the same command to resume")

    def on_predict_end(self, trainer, pl_module) -> None:
        made = torch.tensor([len(self.written)], device=trainer.strategy.root_device)
        self.made = int(trainer.strategy.reduce(made, reduce_op="sum")) if trainer.world_size > 1 else len(self.written)
        trainer.strategy.barrier("enat_sample_chunks_written")  # every rank's chunks are on disk
        if trainer.is_global_zero:
            self.result = assemble(self.out_dir, self.n_chunks, save_images=self.save_images,
                                   grid_size=self.grid_size)
        trainer.strategy.barrier("enat_sample_assembled")


def device_options(device: str | None) -> dict:
    """``--device`` -> Trainer accelerator / devices: None = every GPU (DDP), else the CPU;
    'cpu'; 'cuda' (one GPU); 'cuda:K' (GPU K)."""
    if device is None:
        return {"accelerator": "auto", "devices": "auto"}
    check_device(device)  # the one check (devices.py)
    d = str(device)
    if d == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    return {"accelerator": "gpu", "devices": [int(d.split(":", 1)[1]) if ":" in d else 0]}


@contextlib.contextmanager
def _quiet_lightning():
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _root_device(options: dict) -> torch.device:
    if options["accelerator"] == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    devs = options["devices"]
    return torch.device("cuda", devs[0] if isinstance(devs, list) else 0)


def sample_to_dir(model, labels: list[int], out_dir: str | Path, settings: SamplerSettings = SamplerSettings(),
                  tokenizer=None, *, run: SampleRun = SampleRun(), save_images: bool = False,
                  overwrite: bool = False, device: str | None = None, trainer_options: dict | None = None,
                  model_id: dict | None = None, progress: bool = True, grid_size: int = 64,
                  extra_files: dict[str, bytes] | None = None, conditions=None,
                  on_chunk: Callable[[int], None] | None = None) -> dict:
    """Generates ``labels`` into ``out_dir`` (layout: ``sampling/runner.py``) with ``Trainer.predict``;
    returns a summary dict (on rank 0 with the assembled files; on other ranks the chunks they made).

    A rerun with the same settings resumes (finished chunks are kept); outputs made with other
    settings, or by something else, are refused unless ``overwrite`` (then they are removed first).
    ``device``: see ``device_options``; ``trainer_options`` override the Trainer's arguments (e.g.
    ``{"accelerator": "cpu", "devices": 2, "strategy": "ddp"}``). ``extra_files``: name -> bytes
    written beside the samples (e.g. prompts.txt). ``conditions``: what sample i is conditioned on,
    row-sliceable (default: the class ``labels``), e.g. ``Captions`` for a text model, ``labels``
    then being the prompt indices saved with the samples.
    """
    if not labels:
        raise UserError("no labels to sample")
    out_dir = Path(out_dir)
    tok_id = tokenizer.identity() if tokenizer is not None and hasattr(tokenizer, "identity") else None
    if tokenizer is not None and tok_id is None:
        tok_id = {"kind": type(tokenizer).__name__}
    run_manifest = manifest(labels, settings, run, model_id or {"cfg": model.cfg.to_dict()}, tok_id)
    mode = check_out_dir(out_dir, run_manifest, overwrite)  # every rank, before any rank writes
    options = {**device_options(device), **(trainer_options or {})}
    check_memory(model.cfg, min(run.batch_size, len(labels)), settings, _root_device(options))

    n_chunks = len(chunk_ranges(len(labels), run.batch_size))
    writer = ChunkWriter(out_dir, n_chunks, save_images=save_images, grid_size=grid_size, on_chunk=on_chunk)
    callbacks: list[pl.Callback] = [writer]
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    with _quiet_lightning():  # "GPU available: ..." and tips are training chatter, not sampling output
        trainer = pl.Trainer(**{"logger": False, "enable_checkpointing": False, "enable_model_summary": False,
                                "enable_progress_bar": progress, "use_distributed_sampler": False,
                                "callbacks": callbacks, **options})
    data = ChunkData(labels, out_dir, run, run_manifest, mode, extra_files)
    with warnings.catch_warnings(), _quiet_lightning():
        # one item = one whole chunk, so Lightning cannot track batch indices (and needs not)
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        trainer.predict(SamplingModule(model, settings, run.seed, tokenizer, conditions), datamodule=data, return_predictions=False)
    root, world = trainer.strategy.root_device, trainer.world_size
    devices = [str(root)] if world == 1 else [root.type if root.type == "cpu" else f"{root.type}:{r}" for r in range(world)]
    summary = {"resumed": n_chunks - writer.made, "world_size": world, "devices": devices}
    if writer.result is None:  # not rank 0
        return {"out_dir": str(out_dir), "chunks_written": writer.written, **summary}
    return {**writer.result, **summary}
