"""Sample files: uint8 conversion, image grids, PNG and ``samples.npz`` writers (numpy + PIL).

Every writer is atomic (``enat_lightning.fileio``): it writes a temporary file in the same folder and
``os.replace``s it, so an interrupted run never leaves a half-written file under the final name.

``samples.npz`` follows the ADM evaluator (guided-diffusion ``evaluator.py``): ``arr_0`` uint8
(N, H, W, 3), plus ``labels`` int64 (N,) and ``tokens`` int64 (N, h, w).
"""
from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
from numpy.lib import format as npformat

from enat_lightning.fileio import atomic_write_bytes, atomic_writer  # noqa: F401 (atomic_write_bytes: re-exported)
from enat_lightning.errors import InvalidInput

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the zip epoch: no wall-clock time in sample files


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def save_npz_streamed(path: str | os.PathLike, arrays: dict[str, tuple[tuple[int, ...], np.dtype, Iterable]]) -> Path:
    """Writes an .npz without holding the arrays in memory (a 50k x 256 x 256 x 3 set is ~10 GB).

    ``arrays``: name -> (shape, dtype, iterable of array parts whose concatenation along axis 0
    has that shape). The result is what ``np.savez`` writes and ``np.load`` reads. Atomic and
    reproducible: the zip entries carry a fixed date, so equal arrays give byte-identical files.
    """
    path = Path(path)
    with atomic_writer(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, (shape, dtype, parts) in arrays.items():
                dtype = np.dtype(dtype)
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
                entry.compress_type = zipfile.ZIP_STORED
                with zf.open(entry, "w", force_zip64=True) as f:
                    npformat.write_array_header_1_0(f, {"descr": npformat.dtype_to_descr(dtype),
                                                        "fortran_order": False, "shape": tuple(shape)})
                    written = 0
                    for part in parts:
                        part = np.ascontiguousarray(part, dtype=dtype)
                        if part.shape[1:] != tuple(shape[1:]):
                            raise InvalidInput(f"{path}: part of {name} has shape {part.shape}, expected (*, {shape[1:]})")
                        f.write(part.tobytes())
                        written += part.shape[0]
                    if written != shape[0]:
                        raise InvalidInput(f"{path}: {name} got {written} rows, expected {shape[0]}")
    return path


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """image: uint8 (H, W, 3)."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInput(f"save_png expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def to_uint8(images) -> np.ndarray:
    """Float images (N, 3, H, W), nominally [0, 1] and unclamped (a torch tensor or an array) ->
    uint8 (N, H, W, 3). Clamped to [0, 1] first (as the official sampler), then rounded."""
    x = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise InvalidInput(f"expected images (N, 3, H, W), got shape {x.shape}")
    x = np.clip(x, 0.0, 1.0) * 255.0 + 0.5
    return np.floor(x).astype(np.uint8).transpose(0, 2, 3, 1)


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, fill: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3) -> one uint8 image with ``nrow`` images per row (default ~sqrt(N)), padding
    of grey level ``fill``. The package's one grid tiler."""
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise InvalidInput(f"make_grid expects a non-empty uint8 (N, H, W, 3) array, got {images.shape}")
    n, h, w, _ = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = img
    return grid
