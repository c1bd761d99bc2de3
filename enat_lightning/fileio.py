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


def fsync_path(path: Path) -> None:
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
            fsync_path(tmp)
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


def verify_zip_members(path: str | os.PathLike) -> bool:
    """Checks the CRC-32 that a zip file stores for every member (``torch.save`` writes a zip, so every
    checkpoint carries its own checksums, wherever it travelled, with or without a ``.sha256`` sidecar).

    Returns True if verified, False if ``path`` is not a readable zip (legacy pickles; a truncated zip
    has lost its directory, and the reader reports that); raises ``ChecksumMismatchError`` naming the
    file and member when bytes changed (a flipped bit in a tensor, a damaged header)."""
    import zipfile
    import zlib

    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise ChecksumMismatchError(f"{path} is corrupted: its zip structure is damaged ({e}); copy it again "
                                    f"from its source") from e
    if bad is not None:
        raise ChecksumMismatchError(f"{path} is corrupted: member {bad} fails the CRC-32 stored in the file (bytes "
                                    f"changed after it was written, e.g. a bad copy or disk); copy it again from "
                                    f"its source")
    return True


def verify_integrity(path: str | os.PathLike) -> str:
    """The one corruption check of a file we read back: the ``.sha256`` sidecar when there is one, else the
    zip members' CRC-32 (every torch checkpoint). Returns which check ran ("sha256", "crc32" or "none");
    raises ``ChecksumMismatchError`` naming the file."""
    if verify_checksum(path):
        return "sha256"
    return "crc32" if verify_zip_members(path) else "none"


# -- the output rule: every file or folder a command writes for the user ----------------------------------------
def is_launch_rank_zero() -> bool:
    """Global rank 0 as known before the process group exists (torchrun: RANK; SLURM: SLURM_PROCID;
    Lightning's launcher and manual multi-node: NODE_RANK and LOCAL_RANK)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(target: str | os.PathLike, *, folder: bool = False) -> Path:
    """Where the writer of ``target`` holds its lock: ``DIR/.lock`` for a folder, ``.NAME.lock`` beside a file."""
    target = Path(target)
    return target / ".lock" if folder else target.with_name(f".{target.name}.lock")


class OutputLock:
    """One writer per output: a lock file created with O_EXCL holding ``<hostname> <pid> [<SLURM job id>]``.

    A lock left by a process that no longer runs on this host, or by an earlier run of the same SLURM
    job (a requeued job may land on another node), is stale and taken over; any other lock refuses
    the second writer with a one-line UserError naming the holder and the lock file. Only the launch
    rank 0 takes it (the other ranks of a run are the same writer). Use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, what: str | None = None, holder: str = "run",
                 hint: str = "wait for it to finish, or choose another output"):
        self.path, self.holder = Path(path), holder
        self.what = what or str(self.path.parent)
        self.hint = hint
        self.held = False

    def acquire(self) -> "OutputLock":
        from enat_lightning.errors import UserError

        if not is_launch_rank_zero():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        job = os.environ.get("SLURM_JOB_ID", "")
        me = f"{os.uname().nodename} {os.getpid()} {job}".strip()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
            except FileExistsError:
                owner = self.path.read_text().split() if self.path.is_file() else []
                dead = len(owner) >= 2 and owner[0] == os.uname().nodename and not _pid_alive(int(owner[1]))
                requeued = len(owner) == 3 and job and owner[2] == job  # an earlier run of this very SLURM job
                if dead or requeued:
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise UserError(f"{self.what} is in use by another {self.holder} ({' pid '.join(owner[:2]) or 'unknown'}, "
                                f"lock file {self.path}); {self.hint}. If no such run exists, delete "
                                f"{self.path}") from None
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            return self
        raise UserError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path: str | os.PathLike, *, overwrite: bool = False, is_ours=None, flag: str = "--out",
                 folder: bool = False) -> Path:
    """The output rule, checked before any work (``claim_output`` also locks; use that when you write).

    * an existing file (or, with ``folder=True``, a non-empty folder) is replaced only with
      ``overwrite`` or when ``is_ours(path)`` says this command made it (a rerun or a resume);
      anything else — a checkpoint, a user's image, another command's output — is refused, naming
      ``flag``;
    * a file output must not be a folder and a folder output must not be a file;
    * the nearest existing parent must be a writable folder.

    Raises UserError (one line). Returns ``path`` as a Path."""
    from enat_lightning.errors import UserError

    path = Path(path)
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    present = (path.is_dir() and any(p.name != ".lock" for p in path.iterdir())) if folder else path.exists()
    if present and not overwrite and not (is_ours is not None and is_ours(path)):
        raise UserError(f"{flag} {path} already exists and was not written by this command with these settings; "
                        f"choose another {flag} or pass --overwrite to replace it")
    parent = nearest_existing(path if folder else path.parent)
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path} is not writable ({parent} is read-only for this user); choose another {flag}")
    return path


# A folder output's record of the command that made it (``claim_output(..., made_by=...)``): a rerun of the
# same command (a resume) finds it and may write again; anything else in a non-empty folder is not ours.
OUTPUT_RECORD = ".enat_output.json"


def folder_made_by(made_by: dict):
    """``is_ours`` for a folder output: its ``OUTPUT_RECORD`` names ``made_by``."""
    import json

    def is_ours(path: Path) -> bool:
        try:
            return json.loads((Path(path) / OUTPUT_RECORD).read_text()).get("made_by") == made_by
        except (OSError, ValueError, AttributeError):
            return False

    return is_ours


@contextmanager
def claim_output(path: str | os.PathLike, *, overwrite: bool = False, is_ours=None, flag: str = "--out",
                 folder: bool = False, made_by: dict | None = None) -> Iterator[Path]:
    """THE output rule of every command that writes a file or folder the user names (``--out`` ...):

        with claim_output(out, overwrite=overwrite, is_ours=made_by_me):
            ...compute...
            atomic_write_bytes(out, data)   # or any atomic writer of this module

    1. ``check_output``: exists and not ours -> refused unless ``--overwrite``; writable; right kind;
    2. ``OutputLock`` for the whole block: a second concurrent writer of the same output is refused
       (``DIR/.lock`` for a folder, ``.NAME.lock`` beside a file), released on exit;
    3. the writes themselves stay atomic (``atomic_writer``): a crash leaves the old file or none.

    New commands and outputs (tokenizer training, export, apps) adopt the rule by wrapping their writes
    in this context; ``is_ours`` is the command's own test that an existing output is its rerun. A folder
    output may pass ``made_by`` (the command's identity, JSON types) instead: the folder then records it
    (``OUTPUT_RECORD``, written once the lock is held) and a later run with the same ``made_by`` is ours."""
    if made_by is not None and not folder:
        raise ValueError("made_by records folder outputs; a file output passes is_ours")
    if made_by is not None and is_ours is None:
        is_ours = folder_made_by(made_by)
    path = check_output(path, overwrite=overwrite, is_ours=is_ours, flag=flag, folder=folder)
    with OutputLock(lock_path(path, folder=folder), what=f"{flag} {path}"):
        if made_by is not None:
            import json

            path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path / OUTPUT_RECORD, json.dumps({"made_by": made_by}, indent=2) + "\n")
        yield path
