"""Checkpoints survive kills and corruption (issue 14 items 2, 7, 8): written beside their target
through a temp file + fsync + rename with a sha256 sidecar; `--ckpt_path last` skips files that do not
load and says so; a bad explicit checkpoint is one line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from enat_lightning.checkpointing import AtomicCheckpointIO, checkpoint_problem, newest_valid_checkpoint
from enat_lightning.fileio import verify_checksum
from training_helpers import enat_env, fit_here, step_of, tiny_config


def test_checkpoint_io_writes_beside_the_target_never_in_tmp(tmp_path, monkeypatch):
    import tempfile

    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    made = []
    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: made.append(k.get("dir")) or real(*a, **k))

    io = AtomicCheckpointIO()
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 7}, target)
    assert made and set(made) == {target.parent}  # the temporary files lived beside the target (same filesystem)
    assert not list(system_tmp.iterdir()) and sorted(p.name for p in target.parent.iterdir()) == \
        ["last.ckpt", "last.ckpt.sha256"]
    assert verify_checksum(target) and io.load_checkpoint(target)["global_step"] == 7
    io.remove_checkpoint(target)
    assert not list(target.parent.iterdir())  # the sidecar goes with its checkpoint


_SAVER = """
import sys, torch
from enat_lightning.checkpointing import AtomicCheckpointIO
io = AtomicCheckpointIO()
big = {"state_dict": {"w": torch.zeros(32, 1 << 20)}, "global_step": 2}  # 128 MB: the save takes a while
print("ready", flush=True)
while True:
    io.save_checkpoint(big, sys.argv[1])
"""


def test_sigkill_mid_save_keeps_the_previous_checkpoint(tmp_path):
    """SIGKILL while a 128 MB checkpoint is being written over last.ckpt: the old file stays whole
    (and matches its checksum); the leftover hidden temp file is never taken for a checkpoint."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 1}, target)
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(target)], env=enat_env(), stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while not list(tmp_path.glob(".last.ckpt.*.tmp")):  # mid-write
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert checkpoint_problem(target) is None  # either the old or a complete new checkpoint, never half
    assert step_of(target) in (1, 2) and verify_checksum(target)
    assert newest_valid_checkpoint(sorted(tmp_path.glob("*.ckpt"))) == target.resolve()


def test_truncated_last_ckpt_resume_falls_back_to_the_previous_valid_one(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=4, every_n=2, top_k=-1)
    assert fit_here("-c", cfg)[0] == 0
    ckpts = tmp_path / "run" / "checkpoints"
    last, step4 = ckpts / "last.ckpt", ckpts / "epoch=0-step=4.ckpt"
    for f in (last, step4):  # a kill mid-copy (Lightning's old save) left both truncated
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        (f.parent / (f.name + ".sha256")).unlink()  # no sidecar: only the load can tell
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert rc == 0, err
    assert f"skipping checkpoint {last}: unreadable" in err and f"skipping checkpoint {step4}" in err
    assert f"resuming from {ckpts / 'epoch=0-step=2.ckpt'}" in err
    assert step_of(last) == 6


def test_corrupted_checkpoint_is_skipped_by_checksum(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=4, every_n=2, top_k=-1)
    assert fit_here("-c", cfg)[0] == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2: len(data) // 2 + 400] = bytes(400)  # 400 flipped bytes inside the weights
    last.write_bytes(bytes(data))
    assert "corrupted" in checkpoint_problem(last)
    rc, err = fit_here("-c", cfg, "--ckpt_path", str(last))
    assert rc == 2 and f"enat: error: --ckpt_path {last}: its bytes differ from the sha256" in err, err
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert rc == 0 and f"skipping checkpoint {last}" in err and "epoch=0-step=4.ckpt" in err, err


def test_no_valid_checkpoint_starts_fresh_and_says_so(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, every_n=2)
    assert fit_here("-c", cfg)[0] == 0
    ckpts = tmp_path / "run" / "checkpoints"
    for f in ckpts.glob("*.ckpt"):
        f.write_bytes(b"")
    rc, err = fit_here("-c", cfg, "--ckpt_path", "last")
    assert rc == 0, err
    assert "empty file (0 bytes)" in err and "no valid checkpoint in" in err and "starting from step 0" in err
    assert step_of(ckpts / "last.ckpt") == 2


def test_truncated_or_empty_explicit_checkpoint_is_one_line(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, every_n=2)
    assert fit_here("-c", cfg)[0] == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.ckpt").write_bytes(b"")
    (bad / "half.ckpt").write_bytes(last.read_bytes()[:1000])
    for f, needle in (("empty.ckpt", "empty file (0 bytes)"), ("half.ckpt", "unreadable"), ("none.ckpt", "no such file")):
        rc, err = fit_here("-c", cfg, "--ckpt_path", str(bad / f))
        assert rc == 2 and "Traceback" not in err and "EOFError" not in err, err
        assert f"enat: error: --ckpt_path {bad / f}: {needle}" in err, err


def test_disk_full_during_a_save_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    import pytest

    from enat_lightning.errors import UserError

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 1}, target)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:100])  # half written when the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=rf"cannot write checkpoint {target}: No space left on device; the previous"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 2}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]  # no temp file left
    assert step_of(target) == 1 and verify_checksum(target)


def test_pickle_payload_checkpoint_is_refused_not_run(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, every_n=2)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "x": Payload()}, evil)
    rc, err = fit_here("-c", cfg, "--ckpt_path", str(evil))
    assert rc == 2 and f"enat: error: --ckpt_path {evil}: unreadable" in err, err
    assert not marker.exists()
