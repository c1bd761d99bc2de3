"""One error taxonomy (issue 25, item 8): an OSError names the file and its real cause, the disk-full advice
only for a full disk; ENAT_DEBUG=0 means off; a closed pipe is not an error report."""
from __future__ import annotations

import errno

import pytest

from enat_lightning.cli import _guarded, main


def _raise(e):
    def fn():
        raise e
    return fn


@pytest.mark.parametrize("err, cause", [
    (OSError(errno.EIO, "Input/output error", "/data/img_001.JPEG"), "Input/output error"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/locked.png"), "Permission denied"),
    (OSError(errno.ESTALE, "Stale file handle", "/nfs/shard-000001.tar"), "Stale file handle"),
])
def test_an_os_error_names_the_file_and_cause_without_disk_full_advice(capsys, err, cause):
    assert _guarded(_raise(err)) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("enat: error:") and cause in line and err.filename in line
    assert "free space" not in line and "\n" not in line


def test_disk_full_gets_the_disk_full_advice(capsys):
    assert _guarded(_raise(OSError(errno.ENOSPC, "No space left on device", "/runs/x.npz"))) == 2
    line = capsys.readouterr().err
    assert "No space left on device" in line and "/runs/x.npz" in line and "free space" in line


def test_a_truncated_image_names_the_file(tmp_path, capsys):
    from PIL import Image

    from enat_lightning.data.tokenize import load_image

    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), "red").save(path)
    path.write_bytes(path.read_bytes()[:60])
    assert _guarded(load_image, path, 32) == 2
    line = capsys.readouterr().err
    assert str(path) in line and "free space" not in line, line


@pytest.mark.parametrize("value, traceback", [("0", False), ("false", False), ("", False), ("1", True)])
def test_enat_debug_reads_as_users_expect(monkeypatch, capsys, value, traceback):
    monkeypatch.setenv("ENAT_DEBUG", value)
    if traceback:
        with pytest.raises(FileNotFoundError):
            main(["flops", "-c", "no/such/config.yaml"])
    else:
        assert main(["flops", "-c", "no/such/config.yaml"]) == 2
        assert "no/such/config.yaml" in capsys.readouterr().err


def test_a_closed_pipe_is_not_an_error_report(capsys):
    assert _guarded(_raise(BrokenPipeError(errno.EPIPE, "Broken pipe"))) == 141
