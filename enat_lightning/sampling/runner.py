"""Sample many images to a folder, resumably and data-parallel (the library behind `enat sample`).

Layout of ``out_dir``:
    chunks/manifest.json    the settings of the run; a resume with other settings is refused
    chunks/chunk_000000.npz tokens (n, h, w), labels (n,), images uint8 (n, H, W, 3) if decoded
    samples.npz             arr_0 uint8 (N, H, W, 3) [with a tokenizer], labels (N,), tokens (N, h, w)
    grid.png                up to ``grid_size`` evenly spaced samples [with a tokenizer]
    images/000000_c7.png    one PNG per sample [with save_images]

Chunk i holds samples [i*batch_size, (i+1)*batch_size) and draws from its own generator seeded
with ``chunk_seed(seed, i)``, so the result does not depend on how many devices ran, or on where
an interrupted run stopped (same seed and device type -> same samples).

Devices: ``devices=None`` uses every CUDA device when there are several (one worker thread and one
model copy per device, chunks handed out from a shared queue), else cuda:0, else the CPU.
"""
from __future__ import annotations

import copy
import hashlib
import json
import queue
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import io as sio
from .iterative import generate
from .settings import SamplerSettings

MANIFEST_VERSION = 1
_SAMPLER_FIELDS = {f.name for f in fields(SamplerSettings)}


@dataclass(frozen=True)
class SampleSettings(SamplerSettings):
    """The sampler settings plus what fixes a sample directory's chunks (all recorded in its manifest)."""

    seed: int = 0
    batch_size: int = 32


def chunk_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2 ** 63)


def default_devices() -> list[torch.device]:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [torch.device(f"cuda:{i}") for i in range(n)] if n else [torch.device("cpu")]


def class_labels(num_classes: int, labels: list[int] | None = None, per_class: int | None = None) -> list[int]:
    """The label list: explicit labels, each repeated per_class times, or per_class of every class."""
    if labels is None and per_class is None:
        raise ValueError("give --labels and/or --per-class")
    if per_class is not None and per_class < 1:
        raise ValueError(f"--per-class must be >= 1, got {per_class}")
    base = list(range(num_classes)) if labels is None else list(labels)
    bad = [c for c in base if not 0 <= c <= num_classes]
    if bad:
        raise ValueError(f"labels {bad[:5]} outside [0, {num_classes}] ({num_classes} = unconditional)")
    return [c for c in base for _ in range(per_class or 1)]


def _manifest(labels: list[int], settings: SampleSettings, model_id: dict, tokenizer_id: dict | None) -> dict:
    return {"version": MANIFEST_VERSION, "num_samples": len(labels),
            "labels_sha1": hashlib.sha1(json.dumps(labels).encode()).hexdigest(),
            "settings": settings.to_dict(), "model": model_id, "tokenizer": tokenizer_id}


def _check_or_write_manifest(chunk_dir: Path, manifest: dict) -> None:
    path = chunk_dir / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        if diff:
            raise ValueError(f"{path} belongs to a run with other settings (differs in {diff}); "
                             f"use another --out or delete {chunk_dir}")
        return
    sio.atomic_write_bytes(path, json.dumps(manifest, indent=2).encode())


def _chunk_path(chunk_dir: Path, i: int) -> Path:
    return chunk_dir / f"chunk_{i:06d}.npz"


def _run_chunk(model, tokenizer, labels: list[int], index: int, settings: SampleSettings,
               device: torch.device, condition=None) -> dict:
    gen = torch.Generator(device=device).manual_seed(chunk_seed(settings.seed, index))
    condition = torch.tensor(labels, device=device) if condition is None else condition
    sampler = SamplerSettings.from_dict({k: v for k, v in asdict(settings).items() if k in _SAMPLER_FIELDS})
    ids = generate(model, condition, sampler, generator=gen)  # (n, h, w)
    out = {"tokens": ids.cpu().numpy().astype(np.int64), "labels": np.asarray(labels, dtype=np.int64)}
    if tokenizer is not None:
        with torch.no_grad():
            out["images"] = sio.to_uint8(tokenizer.decode(ids))  # (n, H, W, 3)
    return out


def _replicate(obj, device: torch.device):
    if obj is None or not isinstance(obj, torch.nn.Module):
        return obj
    return copy.deepcopy(obj).to(device).eval()


def sample_to_dir(model, labels: list[int], out_dir: str | Path, settings: SampleSettings = SampleSettings(),
                  tokenizer=None, *, save_images: bool = False, devices: list[torch.device] | None = None,
                  model_id: dict | None = None, progress: bool = True, grid_size: int = 64,
                  on_chunk: Callable[[int], None] | None = None, conditions=None) -> dict:
    """Generates ``labels`` into ``out_dir`` (layout above); returns a summary dict.

    ``conditions``: what sample i is conditioned on, row-sliceable (default: the class ``labels``);
    e.g. ``Captions`` for a text model, ``labels`` then being the prompt indices saved with the samples.

    Finished chunks found in ``out_dir`` are kept (resume). ``on_chunk(i)`` is called after chunk i
    is written (tests use it to interrupt a run).
    """
    if not labels:
        raise ValueError("no labels to sample")
    if settings.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {settings.batch_size}")
    out_dir = Path(out_dir)
    chunk_dir = out_dir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    tok_id = tokenizer.identity() if tokenizer is not None and hasattr(tokenizer, "identity") else None
    if tokenizer is not None and tok_id is None:
        tok_id = {"kind": type(tokenizer).__name__}
    _check_or_write_manifest(chunk_dir, _manifest(labels, settings, model_id or {"cfg": model.cfg.to_dict()}, tok_id))

    bs = settings.batch_size
    n_chunks = (len(labels) + bs - 1) // bs
    todo = [i for i in range(n_chunks) if not _chunk_path(chunk_dir, i).is_file()]
    devices = list(devices) if devices else default_devices()[:max(1, len(todo))]
    _generate_chunks(model, tokenizer, labels, todo, n_chunks, settings, devices, chunk_dir, progress, on_chunk,
                     conditions)
    return assemble(out_dir, n_chunks, save_images=save_images, grid_size=grid_size,
                    resumed=n_chunks - len(todo), devices=[str(d) for d in devices])


def _generate_chunks(model, tokenizer, labels, todo, n_chunks, settings, devices, chunk_dir, progress, on_chunk,
                     conditions=None):
    bs = settings.batch_size
    rows = lambda i: None if conditions is None else conditions[i * bs:(i + 1) * bs]  # noqa: E731
    jobs: queue.Queue[int] = queue.Queue()
    for i in todo:
        jobs.put(i)
    errors: list[BaseException] = []
    done = queue.Queue()

    def worker(device: torch.device, own_model, own_tok):
        try:
            while not errors:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                result = _run_chunk(own_model, own_tok, labels[i * bs:(i + 1) * bs], i, settings, device, rows(i))
                sio.save_npz(_chunk_path(chunk_dir, i), **result)
                done.put(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller thread
            errors.append(e)
            done.put(None)

    bar = _progress_bar(progress, n_chunks, n_chunks - len(todo), len(labels), bs)
    if len(devices) == 1:  # in the caller's thread: Ctrl-C stops right after the current chunk
        dev = devices[0]
        own_model = model.to(dev)
        own_tok = tokenizer.to(dev) if isinstance(tokenizer, torch.nn.Module) else tokenizer
        with bar:
            for i in todo:
                result = _run_chunk(own_model, own_tok, labels[i * bs:(i + 1) * bs], i, settings, dev, rows(i))
                sio.save_npz(_chunk_path(chunk_dir, i), **result)
                bar.advance()
                if on_chunk is not None:
                    on_chunk(i)
        return
    replicas = [(d, _replicate(model, d), _replicate(tokenizer, d)) for d in devices]
    threads = [threading.Thread(target=worker, args=r, daemon=True) for r in replicas]
    with bar:
        for t in threads:
            t.start()
        remaining = len(todo)
        while remaining and not (errors and all(not t.is_alive() for t in threads)):
            try:
                i = done.get(timeout=0.5)
            except queue.Empty:
                continue
            if i is None:
                break
            remaining -= 1
            bar.advance()
            if on_chunk is not None:
                try:
                    on_chunk(i)
                except BaseException:
                    errors.append(RuntimeError("interrupted"))  # stop the workers after their chunk
                    for t in threads:
                        t.join()
                    raise
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


class _Bar:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def advance(self):
        if self.progress is not None:
            self.progress.advance(self.task)


def _progress_bar(enabled: bool, total: int, completed: int, n: int, bs: int) -> _Bar:
    if not enabled:
        return _Bar(None, None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    prog = Progress(TextColumn(f"sampling {n} images, {bs}/chunk"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn())
    task = prog.add_task("chunks", total=total, completed=completed)
    return _Bar(prog, task)


def assemble(out_dir: str | Path, n_chunks: int, *, save_images: bool = False, grid_size: int = 64,
             **summary) -> dict:
    """Joins the chunk files into samples.npz, grid.png and (optionally) per-image PNGs, one chunk
    in memory at a time."""
    out_dir = Path(out_dir)
    paths = [_chunk_path(out_dir / "chunks", i) for i in range(n_chunks)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"chunk file {missing[0]} is missing; rerun the same command to finish it")
    shapes = []
    for p in paths:
        with np.load(p) as z:
            shapes.append({k: z[k].shape for k in z.files})
    n = sum(s["labels"][0] for s in shapes)
    has_images = all("images" in s for s in shapes)

    def parts(key):
        for p in paths:
            with np.load(p) as z:
                yield z[key]

    arrays = {}
    if has_images:
        arrays["arr_0"] = ((n, *shapes[0]["images"][1:]), np.uint8, parts("images"))
    arrays["labels"] = ((n,), np.int64, parts("labels"))
    arrays["tokens"] = ((n, *shapes[0]["tokens"][1:]), np.int64, parts("tokens"))
    sio.save_npz_streamed(out_dir / "samples.npz", arrays)
    result = {"out_dir": str(out_dir), "num_samples": int(n), "samples_npz": str(out_dir / "samples.npz"),
              "decoded": has_images, **summary}
    if not has_images:
        return result
    pick = set(np.linspace(0, n - 1, min(grid_size, n)).round().astype(int).tolist())
    grid_images, start = [], 0
    img_dir = out_dir / "images"
    for p in paths:
        with np.load(p) as z:
            images, labels = z["images"], z["labels"]
        grid_images += [images[k - start] for k in sorted(pick) if start <= k < start + len(images)]
        if save_images:
            for k, (img, lab) in enumerate(zip(images, labels), start):
                path = img_dir / f"{k:06d}_c{int(lab)}.png"
                if not path.is_file():
                    sio.save_png(path, img)
        start += len(images)
    sio.save_png(out_dir / "grid.png", sio.make_grid(np.stack(grid_images)))
    result["grid"] = str(out_dir / "grid.png")
    if save_images:
        result["images_dir"] = str(img_dir)
    return result
