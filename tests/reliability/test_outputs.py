"""Issue 14.6 (evaluate side) and 14.8 (command side): outputs never replace a user's file, are checked before
the work, and bad inputs / environments end in one line naming the culprit."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch
from commands_helpers import one_line_error, tiny_checkpoint

from enat_lightning.cli import main


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    from enat_lightning.demo.classifier import build_demo_classifier

    return build_demo_classifier(tmp_path_factory.getbasetemp() / "shared_demo_classifier.pt", dataset="digits")  # session cache


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8), labels=np.arange(12) % 10)
    return path


def _evaluate(samples, cls, out, *extra):
    return ["evaluate", "--samples", str(samples), "--feature", f"demo:{cls}", "--is_splits", "2", "--out", str(out),
            *extra]


def test_evaluate_never_replaces_a_users_file(samples, cls, tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text("my notes\n")
    one_line_error(capsys, _evaluate(samples, cls, out), str(out), "already exists", "--overwrite")
    assert out.read_text() == "my notes\n"
    assert main(_evaluate(samples, cls, out, "--overwrite")) == 0
    first = json.loads(out.read_text())
    assert first["made_by"]["command"] == "enat evaluate"
    # the same command with the same settings may refresh its own file; other settings may not
    assert main(_evaluate(samples, cls, out)) == 0
    capsys.readouterr()
    one_line_error(capsys, _evaluate(samples, cls, out, "--is_splits", "3"), "already exists")
    assert json.loads(out.read_text()) == first


def test_evaluate_checks_out_before_any_work(tmp_path, cls, capsys):
    missing = tmp_path / "not_there.npz"  # the work would fail on it: the --out error must come first
    one_line_error(capsys, _evaluate(missing, cls, tmp_path), "is a directory")
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, _evaluate(missing, cls, tmp_path / "file" / "r.json"), "is a file, not a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: stand in for a read-only folder
        real = os.access
        os.access = lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw)
    else:
        ro.chmod(0o555)
    try:
        one_line_error(capsys, _evaluate(missing, cls, ro / "r.json"), "not writable", str(ro / "r.json"))
        one_line_error(capsys, ["sample", "--preset", "enat_s", "--official_weights", "x.pth", "--labels", "1",
                                "--out", str(ro / "s")], "not writable")
    finally:
        if os.geteuid() == 0:
            os.access = real
        ro.chmod(0o755)


def test_disk_full_names_the_path_and_writes_nothing(samples, cls, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.json"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)  # the atomic writer's final step
    one_line_error(capsys, _evaluate(samples, cls, out), f"cannot write {out}", "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.npz"]  # no result, no temporary file


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_gpu(samples, cls, tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "c.ckpt")
    for argv in (["sample", "--ckpt", str(ck), "--labels", "1", "--out", str(tmp_path / "s"), "--device", "cuda"],
                 _evaluate(samples, cls, tmp_path / "r.json", "--device", "cuda"),
                 ["analyze", "similarity", "--ckpt", str(ck), "--out", str(tmp_path / "a"), "--device", "cuda:0"]):
        one_line_error(capsys, argv, "--device cuda", "no CUDA GPU")


def test_samples_file_problems_name_the_file(tmp_path, cls, capsys):
    more_labels = tmp_path / "more_labels.npz"
    np.savez(more_labels, arr_0=np.zeros((4, 16, 16, 3), np.uint8), labels=np.arange(6))
    one_line_error(capsys, _evaluate(more_labels, cls, tmp_path / "a.json"), str(more_labels), "4 images but 6 labels")
    text = tmp_path / "samples.npz"
    text.write_text("not an archive\n")
    one_line_error(capsys, _evaluate(text, cls, tmp_path / "b.json"), str(text), "not an .npz archive")
    one_line_error(capsys, _evaluate(tmp_path / "none.npz", cls, tmp_path / "c.json"), "none.npz does not exist",
                   "enat sample")


def test_garbage_inception_file_is_one_line(samples, tmp_path, capsys):
    garbage = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    garbage.write_bytes(os.urandom(2048))
    one_line_error(capsys, ["evaluate", "--samples", str(samples), "--inception", str(garbage)], str(garbage))
