import hashlib
import os
import stat

import pytest
import torch

from enat_lightning import fileio
from enat_lightning.fileio import atomic_torch_save, atomic_write_bytes, atomic_write_text, atomic_writer, sha256_file


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.bin"  # missing parent folders are created
    assert atomic_write_bytes(path, b"old") == path
    atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert _names(path.parent) == ["a.bin"]


def test_write_text_is_utf8(tmp_path):
    path = atomic_write_text(tmp_path / "t.json", "ŝ=1\n")
    assert path.read_bytes() == "ŝ=1\n".encode("utf-8")


def test_mode_is_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)  # mkstemp's 0600 and a strict umask must not leak into our outputs
    try:
        path = atomic_write_bytes(tmp_path / "m.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failing_write_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    seen = []
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_writer(path) as tmp:
            seen.append(tmp)
            assert tmp.parent == path.parent and tmp.name != path.name  # same folder: rename is atomic
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert not seen[0].exists()
    assert _names(tmp_path) == ["keep.txt"]


def test_failing_torch_save_keeps_old_checkpoint(tmp_path):
    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    with pytest.raises(Exception):
        atomic_torch_save({"fn": lambda: 0}, path)  # a lambda cannot be pickled
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert _names(tmp_path) == ["c.pt"]


def test_fsync_on_by_default_and_optional(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    atomic_write_bytes(tmp_path / "a", b"1")
    assert len(calls) == 1
    atomic_write_bytes(tmp_path / "b", b"1", fsync=False)
    assert len(calls) == 1


def test_sha256_known_value_and_chunking(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    data = bytes(range(256)) * 41  # not a multiple of the chunk size
    path.write_bytes(data)
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_old_names_still_point_here():
    from enat_lightning.analysis import report
    from enat_lightning.evaluation import frechet as fid
    from enat_lightning.data import format as data_format
    from enat_lightning.sampling import io as sio

    assert fid.sha256_file is sha256_file
    assert sio.atomic_write_bytes is report.atomic_write_bytes is data_format.atomic_write_bytes is atomic_write_bytes


def test_checksum_round_trip_and_corruption(tmp_path):
    import pytest

    from enat_lightning.fileio import ChecksumMismatchError, checksum_path, verify_checksum, write_checksum

    path = tmp_path / "w.ckpt"
    path.write_bytes(b"weights" * 100)
    assert verify_checksum(path) is False  # nothing recorded: other tools' files still load
    write_checksum(path)
    assert checksum_path(path).read_text().endswith("  w.ckpt\n")
    assert verify_checksum(path) is True
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="w.ckpt is corrupted"):
        verify_checksum(path)
