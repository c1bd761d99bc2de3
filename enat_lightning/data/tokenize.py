"""Images -> token shards: ADM centre crop, batched tokenizer encode (original + flipped), resumable.

Library side of ``enat tokenize``. Inputs are a fixed, sorted list of (image path, label); shard k
holds inputs [k * shard_size, (k + 1) * shard_size), so an interrupted run resumes at the first
unfinished shard (see writer.py). Unreadable images are reported by path and skipped.
"""
from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from enat_lightning.errors import InvalidInput, MissingInput, UserError

from .format import Manifest, Sample
from .writer import ShardSetWriter

# torchvision's ImageFolder extensions, so class indices and file sets match it
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def adm_center_crop(img, resolution: int):
    """ADM / guided-diffusion centre crop of a PIL image: halve with a box filter while the short
    side is >= 2x the target (cheap anti-aliasing), bicubic-resize the short side to
    ``resolution``, then crop the centre square."""
    from PIL import Image

    while min(img.size) >= 2 * resolution:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = resolution / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - resolution) // 2, (arr.shape[1] - resolution) // 2
    return Image.fromarray(arr[top:top + resolution, left:left + resolution])


def load_image(path: str | os.PathLike, resolution: int) -> torch.Tensor:
    """-> float32 (3, R, R) in [0, 1]. Raises OSError / ValueError on unreadable files."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = adm_center_crop(to_rgb(im), resolution)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for one broken file: name the file
        raise UnreadableImageError(f"image {path} cannot be read ({type(e).__name__}: {e})") from e
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


class UnreadableImageError(UserError, OSError):
    """An image file that cannot be decoded; the message names it. Also an OSError, as PIL's own errors."""


def to_rgb(im):
    """Any PIL mode -> 8-bit RGB with the right brightness. ``convert("RGB")`` clips 16-bit and 32-bit
    greyscale ('I;16', 'I', 'F': values up to 65535) to 255, turning most of the image white; those are
    rescaled from their own range first. Every other mode (L, P, RGBA, CMYK, YCbCr, LA, 1) converts as
    torchvision's loader does."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        full = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255) else 255.0
        if im.mode == "F":
            full = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(np.round(a / full * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    return im.convert("RGB")


def list_imagefolder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """torchvision ImageFolder order: classes = sorted sub-directories (label = index), files sorted
    within each class. -> ([(path, label)], class names)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise MissingInput(f"{root} has no class sub-directories (expected ROOT/<class>/<image>)")
    items = []
    for label, c in enumerate(classes):
        found = _walk_images(root / c)
        if not found:  # torchvision refuses such a folder too (it would shift every later label)
            raise InvalidInput(f"class folder {root / c} holds no images with extensions {IMG_EXTENSIONS}: every "
                            f"sub-folder of {root} is a class (torchvision ImageFolder rules; hidden ones such as "
                            f".ipynb_checkpoints too), so remove it or move it out of {root}")
        items += [(p, label) for p in found]
    return items, classes


def _walk_images(folder: Path) -> list[str]:
    """Image files under ``folder`` in torchvision's order (os.walk following links, sorted); a symlink loop
    (a folder that contains itself) is refused naming it instead of walking forever."""
    out, seen = [], set()
    for dirpath, dirnames, files in sorted(os.walk(folder, followlinks=True)):
        real = os.path.realpath(dirpath)
        if real in seen:  # reached a second time through links (a loop between folders)
            raise UserError(f"{dirpath} is a symlink loop or a second link to {real}; remove the link")
        seen.add(real)
        for d in dirnames:
            target = os.path.realpath(os.path.join(dirpath, d))
            if target == real or real.startswith(target + os.sep):
                raise UserError(f"{os.path.join(dirpath, d)} is a symlink loop (it leads back to {target}); "
                                f"remove the link")
        out += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    return out


def read_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """A TSV of ``image path<TAB>integer label`` lines (relative paths are relative to the list
    file; blank lines and lines starting with # are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"list file {path} does not exist")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip().lstrip("-").isdigit() or int(parts[1]) < 0:
            raise InvalidInput(f"{path}:{n}: expected 'image path<TAB>label >= 0', got {line!r}")
        p = parts[0] if os.path.isabs(parts[0]) else str(path.parent / parts[0])
        items.append((p, int(parts[1])))
    if not items:
        raise InvalidInput(f"{path} lists no images")
    return items


@dataclass
class TokenizeResult:
    manifest: Manifest
    unreadable: list[str] = field(default_factory=list)  # paths skipped in this run
    resumed_from: int = 0  # finished shards found at start
    already_complete: bool = False  # the output was finished by an earlier run with the same job


def _items_hash(items: list[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for p, y in items:
        h.update(f"{p}\t{y}\n".encode())
    return h.hexdigest()


def _device_of(tok) -> torch.device:
    params = getattr(tok, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def tokenize_items(items: list[tuple[str, int]], tokenizer, out: str | os.PathLike, resolution: int, *,
                   num_classes: int | None = None, shard_size: int = 1000, batch_size: int = 64,
                   flip: bool = True, source: dict | None = None, progress: bool = True,
                   read_threads: int = 4, on_shard: Callable[[int], None] | None = None,
                   text: dict | None = None, sample_extra: Callable[[int], dict] | None = None) -> TokenizeResult:
    """Tokenizes ``items`` [(path, label)] into shards under ``out`` (resuming a previous run).

    ``on_shard(k)`` is called after shard k is written (tests interrupt a run with it).
    Text data (``data/coco.py``): ``text`` is the manifest's text info and ``sample_extra(i)`` the
    extra Sample fields of item i (``text``, ``text_mask``); labels are then not stored."""
    if shard_size < 1 or batch_size < 1:
        raise InvalidInput(f"shard_size and batch_size must be >= 1, got {shard_size}, {batch_size}")
    if text is None:
        num_classes = num_classes if num_classes is not None else max(y for _, y in items) + 1
        bad = [(p, y) for p, y in items if y >= num_classes]
        if bad:
            raise InvalidInput(f"label {bad[0][1]} of {bad[0][0]} >= num_classes {num_classes}")
    if resolution % tokenizer.downsample:
        raise InvalidInput(f"resolution {resolution} is not a multiple of the tokenizer's downsample "
                         f"factor {tokenizer.downsample}")
    identity = tokenizer.identity()
    job = {"inputs": _items_hash(items), "count": len(items), "tokenizer": identity,
           "resolution": resolution, "shard_size": shard_size, "flip": flip}
    if text is not None:
        job["text"] = text
    writer = ShardSetWriter(out, job, codebook_size=tokenizer.codebook_size,
                            latent_side=resolution // tokenizer.downsample, num_classes=num_classes,
                            tokenizer=identity, has_flip=flip, text=text,
                            source={"resolution": resolution, **(source or {})})
    result = TokenizeResult(manifest=None, resumed_from=writer.done_shards,  # type: ignore[arg-type]
                            already_complete=writer.complete)
    if writer.complete:
        result.manifest = writer.finish()
        return result
    n_shards = -(-len(items) // shard_size)
    device = _device_of(tokenizer)

    def read(i: int):
        try:
            return load_image(items[i][0], resolution)
        except Exception as e:  # PIL raises many types for broken files; report and skip
            return e

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("tokenize"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress, transient=False)
    with bar, ThreadPoolExecutor(max(1, read_threads)) as pool:
        task = bar.add_task("tokenize", total=len(items), completed=min(len(items), writer.done_shards * shard_size))
        for k in range(writer.done_shards, n_shards):
            lo, hi = k * shard_size, min(len(items), (k + 1) * shard_size)
            samples: list[Sample] = []
            for b0 in range(lo, hi, batch_size):
                idx = list(range(b0, min(hi, b0 + batch_size)))
                loaded = list(pool.map(read, idx))
                good = []
                for i, img in zip(idx, loaded):
                    if isinstance(img, Exception):
                        print(f"enat tokenize: skipping: {img}", file=sys.stderr)  # names the file
                        result.unreadable.append(items[i][0])
                    else:
                        good.append((i, img))
                if good:
                    x = torch.stack([img for _, img in good]).to(device)  # (B, 3, R, R)
                    with torch.no_grad():
                        ids = tokenizer.encode(x).cpu().numpy()  # (B, h, w)
                        ids_f = tokenizer.encode(x.flip(-1)).cpu().numpy() if flip else [None] * len(good)
                    samples += [Sample(key=f"{i:09d}", tokens=t, label=None if text is not None else items[i][1],
                                       flip=f, **(sample_extra(i) if sample_extra is not None else {}))
                                for (i, _), t, f in zip(good, ids, ids_f)]
                bar.advance(task, len(idx))
            writer.add_shard(samples)
            if on_shard is not None:
                on_shard(k)
    if not any(sh.samples for sh in writer.shards):  # every image failed: not a data set
        writer.release()
        raise UserError(f"no image could be read ({len(result.unreadable)} of {len(items)} failed, e.g. "
                        f"{result.unreadable[:3]}); nothing was written as a data set in {out}")
    result.manifest = writer.finish()
    return result


def tokenize_imagefolder(root: str | os.PathLike, tokenizer, out: str | os.PathLike, resolution: int,
                         **kw) -> TokenizeResult:
    """ImageFolder layout ROOT/<class>/<image>; labels = sorted class index."""
    items, classes = list_imagefolder(root)
    return tokenize_items(items, tokenizer, out, resolution, num_classes=len(classes),
                          source={"root": str(root), "layout": "imagefolder", "classes": classes}, **kw)


def tokenize_list(list_file: str | os.PathLike, tokenizer, out: str | os.PathLike, resolution: int,
                  num_classes: int | None = None, **kw) -> TokenizeResult:
    """A TSV list of (image path, label)."""
    items = read_list(list_file)
    return tokenize_items(items, tokenizer, out, resolution, num_classes=num_classes,
                          source={"list": str(list_file), "layout": "list"}, **kw)
