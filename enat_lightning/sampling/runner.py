"""The pure pieces of a sample folder (``enat sample``): layout, manifest, overwrite rules, chunks.

The Lightning side (``enat_lightning.prediction``: ``Trainer.predict`` + a prediction writer) runs
the chunks; everything here is torch / numpy / files and imports no Lightning.

Layout of ``out_dir``:
    chunks/manifest.json    what made the folder: sampler settings, run options, model, labels;
                            a rerun with other settings is refused (``--overwrite`` replaces the run)
    chunks/chunk_000000.npz tokens (n, h, w), labels (n,), images uint8 (n, H, W, 3) if decoded
    samples.npz             arr_0 uint8 (N, H, W, 3) [with a tokenizer], labels (N,), tokens (N, h, w)
    grid.png                up to ``grid_size`` evenly spaced samples [with a tokenizer]
    images/000000_c7.png    one PNG per sample [with save_images]

Chunk c holds samples [c*batch_size, (c+1)*batch_size). Sample i draws from its own generator
seeded with ``seeding.sample_seed(seed, i)``, so a sample does not depend on how many processes
ran, which of them made its chunk, or where an interrupted run stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from enat_lightning.errors import InvalidInput, MissingInput, UserError
from enat_lightning.fileio import sha256_file
from enat_lightning.seeding import sample_generators

from . import io as sio
from .iterative import generate
from .settings import SamplerSettings

MANIFEST_VERSION = 3  # 3: checkpoint and strategy files recorded by sha256
OUTPUT_FILES = ("samples.npz", "grid.png", "prompts.txt")  # files of out_dir a run writes (besides chunks/, images/)
IMAGE_NAME = re.compile(r"^\d{6}_c\d+\.png$")


@dataclass(frozen=True)
class SampleRun:
    """How a sampling run is cut and seeded (not sampler settings: those are ``SamplerSettings``).

    seed:       sample i draws from ``seeding.sample_seed(seed, i)``
    batch_size: samples per chunk (one ``predict_step``); chunk files are the unit of resuming
    """

    seed: int = 0
    batch_size: int = 32

    def __post_init__(self):
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")


def class_labels(num_classes: int, labels: list[int] | None = None, per_class: int | None = None) -> list[int]:
    """The label list: explicit labels, each repeated per_class times, or per_class of every class."""
    if labels is None and per_class is None:
        raise InvalidInput("give --labels and/or --per-class")
    if per_class is not None and per_class < 1:
        raise InvalidInput(f"--per-class must be >= 1, got {per_class}")
    base = list(range(num_classes)) if labels is None else list(labels)
    bad = [c for c in base if not 0 <= c <= num_classes]
    if bad:
        raise InvalidInput(f"labels {bad[:5]} outside [0, {num_classes}] ({num_classes} = unconditional)")
    return [c for c in base for _ in range(per_class or 1)]


# -- the manifest and the overwrite rule ------------------------------------------------------------
CONTENT_KEYS = ("ckpt", "official_weights")  # model_id entries naming a file: identified by its bytes too


def _file_sha256(path) -> str | None:
    p = Path(path)
    return sha256_file(p) if p.is_file() else None


def manifest(labels: list[int], settings: SamplerSettings, run: SampleRun, model_id: dict,
             tokenizer_id: dict | None) -> dict:
    """What makes a folder's samples: a rerun with an equal manifest resumes, any other is refused.

    Files are identified by content, not by path: the checkpoint (``model_id["ckpt"]`` /
    ``["official_weights"]``) and the ``strategy`` file are recorded with their sha256, so a resume after
    either was replaced or edited at the same path is refused instead of mixing old and new samples."""
    model_id = dict(model_id)
    for key in CONTENT_KEYS:
        if isinstance(model_id.get(key), str):
            model_id[f"{key}_sha256"] = _file_sha256(model_id[key])
    config = settings.to_dict()
    if settings.strategy is not None:
        config["strategy_sha256"] = _file_sha256(settings.strategy)
    return {"version": MANIFEST_VERSION, "num_samples": len(labels),
            "labels_sha1": hashlib.sha1(json.dumps(labels).encode()).hexdigest(),
            "settings": config, "run": asdict(run), "model": model_id, "tokenizer": tokenizer_id}


def manifest_path(out_dir: Path) -> Path:
    return Path(out_dir) / "chunks" / "manifest.json"


def chunk_path(out_dir: Path, c: int) -> Path:
    return Path(out_dir) / "chunks" / f"chunk_{c:06d}.npz"


def existing_outputs(out_dir: Path) -> list[Path]:
    """The files of ``out_dir`` a sampling run writes (and an overwrite removes); other files are left alone."""
    out_dir = Path(out_dir)
    found = [out_dir / name for name in OUTPUT_FILES if (out_dir / name).exists()]
    chunks = out_dir / "chunks"
    if chunks.is_dir():
        found += sorted(p for p in chunks.iterdir() if p.name == "manifest.json" or re.match(r"^chunk_\d+\.npz$", p.name))
    images = out_dir / "images"
    if images.is_dir():
        found += sorted(p for p in images.iterdir() if IMAGE_NAME.match(p.name))
    return found


def check_out_dir(out_dir: Path, new: dict, overwrite: bool) -> str:
    """'fresh' (nothing of ours there), 'resume' (same manifest) or 'overwrite'; read-only.

    Refuses (UserError) outputs that exist and were not made with the same settings, unless
    ``overwrite``. Every process of a run calls it before any of them writes.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    found = existing_outputs(out_dir)
    if not found:
        return "fresh"
    mpath = manifest_path(out_dir)
    try:
        old = json.loads(mpath.read_text()) if mpath.is_file() else None
    except (OSError, ValueError):
        old = None
    if old == new:
        return "resume"
    if overwrite:
        return "overwrite"
    if old is None:
        why = f"{found[0]} exists and no {mpath} says what made it"
    else:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        changed = [f"{new[part].get(k[:-len('_sha256')], k)}" for part in ("model", "settings")
                   for k in (new.get(part) or {}) if k.endswith("_sha256") and isinstance(old.get(part), dict)
                   and old[part].get(k) != new[part].get(k)]
        why = (f"{', '.join(changed)} changed since the samples in {out_dir} were made (its sha256 differs from "
               f"the one in {mpath}): they would mix two models" if changed else
               f"{mpath} belongs to a run with other settings (differs in {diff})")
    raise UserError(f"{why}; use another --out, or --overwrite to replace the earlier samples")


def prepare_out_dir(out_dir: Path, new: dict, mode: str) -> None:
    """Readies ``out_dir`` for this run (one process only): 'overwrite' first removes every output of
    the earlier run (chunks, samples.npz, grid, PNGs, prompts), so no stale file stays beside the new
    ones; 'resume' keeps them (same settings: the same samples). Writes the manifest."""
    out_dir = Path(out_dir)
    if mode == "overwrite":
        for p in existing_outputs(out_dir):
            p.unlink()
        _remove_if_empty(out_dir / "images")
    (out_dir / "chunks").mkdir(parents=True, exist_ok=True)
    sio.atomic_write_bytes(manifest_path(out_dir), json.dumps(new, indent=2).encode())


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# -- chunks ------------------------------------------------------------------------------------------
def chunk_ranges(num_samples: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of every chunk."""
    return [(s, min(num_samples, s + batch_size)) for s in range(0, num_samples, batch_size)]


def todo_chunks(out_dir: Path, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The unfinished chunks rank ``rank`` owns (c = rank, rank + W, ...): no two ranks ever write
    the same chunk, and each finds its own finished chunks without asking the others."""
    n = len(chunk_ranges(num_samples, batch_size))
    return [c for c in range(rank, n, world_size) if not chunk_path(out_dir, c).is_file()]


@torch.no_grad()
def sample_chunk(model, tokenizer, labels: torch.Tensor, start: int, settings: SamplerSettings, seed: int,
                 condition=None) -> dict:
    """Samples ``labels`` (n,) as samples start .. start+n-1 of a run -> tokens (n, h, w) [, images uint8 (n, H, W, 3)].

    ``condition``: what these samples are conditioned on (default: the class ``labels``), e.g. the
    ``Captions`` rows of a text model, ``labels`` then being prompt indices."""
    device = next(model.parameters()).device
    gens = sample_generators(seed, range(start, start + len(labels)), device)
    ids = generate(model, labels.to(device) if condition is None else condition, settings, generator=gens)  # (n, h, w)
    out = {"tokens": ids}
    if tokenizer is not None:
        out["images"] = torch.from_numpy(sio.to_uint8(tokenizer.decode(ids)))  # (n, H, W, 3)
    return out


# -- memory ------------------------------------------------------------------------------------------
def sampling_bytes_lower_bound(cfg, batch_size: int, settings: SamplerSettings) -> int:
    """Bytes one chunk surely needs at its peak: the fp32 logits of the first step (2B rows with
    guidance, every token masked) and their log-softmax, plus the (rows, L, width) activations of a
    block (input, attention output, 4x MLP hidden). A lower bound, so it never refuses a batch that fits."""
    rows = batch_size * (2 if settings.cfg_scale else 1)
    L, V, D = cfg.seq_len, cfg.codebook_size, cfg.width
    return 4 * rows * L * (2 * V + 6 * D)


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (CUDA: the driver's free memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg, batch_size: int, settings: SamplerSettings, device: torch.device) -> None:
    """Refuses a batch that cannot fit before anything is allocated (one line naming --batch-size)."""
    need, free = sampling_bytes_lower_bound(cfg, batch_size, settings), free_bytes(device)
    if free is not None and need > free:
        per = max(1, sampling_bytes_lower_bound(cfg, 1, settings))
        raise UserError(f"--batch-size {batch_size} needs at least {need / 2**30:.1f} GiB on {device} but "
                        f"{free / 2**30:.1f} GiB are free; use --batch-size {max(1, free // per // 2)} or less")


# -- assembling ----------------------------------------------------------------------------------------
def assemble(out_dir: str | Path, n_chunks: int, *, save_images: bool = False, grid_size: int = 64,
             **summary) -> dict:
    """Joins the chunk files into samples.npz, grid.png and (optionally) per-image PNGs, one chunk
    in memory at a time."""
    out_dir = Path(out_dir)
    paths = [chunk_path(out_dir, i) for i in range(n_chunks)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MissingInput(f"chunk file {missing[0]} is missing; rerun the same command to finish it")
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
    img_dir = out_dir / "images"
    if not has_images:
        return result
    pick = set(np.linspace(0, n - 1, min(grid_size, n)).round().astype(int).tolist())
    grid_images, start = [], 0
    for p in paths:
        with np.load(p) as z:
            images, labels = z["images"], z["labels"]
        grid_images += [images[k - start] for k in sorted(pick) if start <= k < start + len(images)]
        if save_images:
            for k, (img, lab) in enumerate(zip(images, labels), start):
                path = img_dir / f"{k:06d}_c{int(lab)}.png"
                if not path.is_file():  # written by an earlier call of this same run (atomic writes)
                    sio.save_png(path, img)
        start += len(images)
    sio.save_png(out_dir / "grid.png", sio.make_grid(np.stack(grid_images)))
    result["grid"] = str(out_dir / "grid.png")
    if save_images:
        result["images_dir"] = str(img_dir)
    return result
