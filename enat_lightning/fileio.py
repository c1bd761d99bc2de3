"""Atomic file writes and file hashing: the one implementation every writer in the package uses.

Every file we produce (checkpoints, shards, npz, json, png) is written to a temporary file in the
same folder, flushed to disk, and ``os.replace``d onto its final name, so a reader (or a run killed
half-way) never sees half a file under the final name. Standard library only; torch is imported
lazily by ``atomic_torch_save`` so data/ and analysis/ code can use this module without it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FILE_MODE = 0o644  # mkstemp creates 0600; our outputs are meant to be read by others (shared runs, servers)


def _fsync_path(path: Path) -> None:
    # fsync on any descriptor of a file flushes the file's data (POSIX), so the writer that
    # filled the temp file (np.savez, torch.save, PIL, Lightning) needs no fsync of its own.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder; on a clean exit the file there is flushed
    (``fsync``), given mode 0644 and renamed onto ``path``. On an exception it is removed and the
    old ``path`` (if any) is left untouched. Creates missing parent folders.

        with atomic_writer(out / "stats.npz") as tmp:
            torch.save(obj, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder: os.replace is only atomic within one filesystem. Hidden + ".tmp" so globs for
    # finished files ("*.tar", "*.npz") never pick it up; mkstemp makes the name unique per writer.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            _fsync_path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there if the write or the rename failed


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Writes ``data`` to ``path`` atomically; returns ``path`` as a Path."""
    path = Path(path)
    with atomic_writer(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically; returns ``path`` as a Path."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_torch_save(obj, path: str | os.PathLike, *, fsync: bool = True) -> Path:
    """``torch.save(obj, path)``, atomically; returns ``path`` as a Path."""
    import torch  # lazily: the rest of this module needs only the standard library

    path = Path(path)
    with atomic_writer(path, fsync=fsync) as tmp:
        torch.save(obj, tmp)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks (checkpoints can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- checksums beside files ("<name>.sha256"): written at save, verified at load --------------------------
CHECKSUM_SUFFIX = ".sha256"


class ChecksumMismatchError(ValueError):
    """A file's bytes do not match the checksum recorded beside it at save time (silent corruption)."""


def checksum_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_checksum(path: str | os.PathLike) -> str:
    """Records the sha256 of ``path`` in ``<path>.sha256`` (``sha256sum`` format, written atomically)."""
    path = Path(path)
    digest = sha256_file(path)
    atomic_write_text(checksum_path(path), f"{digest}  {path.name}\n")
    return digest


def verify_checksum(path: str | os.PathLike) -> bool:
    """Checks ``path`` against ``<path>.sha256`` when that file exists.

    Returns True if verified, False if no checksum was recorded (files written by other tools);
    raises ``ChecksumMismatchError`` naming the file when the bytes changed since they were saved.
    """
    path = Path(path)
    side = checksum_path(path)
    if not side.is_file():
        return False
    recorded = side.read_text().split()[0] if side.read_text().strip() else ""
    actual = sha256_file(path)
    if actual != recorded:
        raise ChecksumMismatchError(
            f"{path} is corrupted: its sha256 {actual[:12]}… differs from the one recorded at save time in "
            f"{side.name} ({recorded[:12]}…); restore the file from a copy, or delete {side.name} to load it anyway")
    return True
