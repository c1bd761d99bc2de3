"""One output rule for every command (issue 25, items 2 and 3): an existing output that the command did not
make is refused unless --overwrite; a second concurrent writer is refused by a lock; a resumed sample run is
identified by the content of its checkpoint and strategy files, not by their paths."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from commands_helpers import TINY_ENAT, one_line_error, tiny_checkpoint
from enat_lightning.cli import main
from enat_lightning.errors import UserError
from enat_lightning.fileio import check_output, claim_output, lock_path


# -- the rule itself (fileio.claim_output) ---------------------------------------------------------------
def test_claim_output_refuses_what_is_not_ours_unless_overwrite(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists and was not written by this command"):
        with claim_output(target):
            target.write_bytes(b"lost")
    assert target.read_bytes() == b"precious"
    with claim_output(target, is_ours=lambda p: p.read_bytes() == b"precious") as path:
        assert lock_path(path).is_file()  # held while writing
    assert not lock_path(target).exists()  # released after
    with claim_output(target, overwrite=True):
        pass


@pytest.fixture
def other_process(tmp_path):
    """A live process of this host, as the holder of a lock."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _hold(lock, proc):
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{__import__('os').uname().nodename} {proc.pid}\n")


def test_a_concurrent_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, other_process):
    target = tmp_path / "out.npz"
    _hold(lock_path(target), other_process)
    with pytest.raises(UserError, match=f"in use by another run .* pid {other_process.pid}"):
        with claim_output(target):
            pass
    other_process.kill()
    other_process.wait()
    with claim_output(target):  # its process is gone: stale, taken over
        pass


def test_two_tokenize_runs_into_one_folder_are_refused(tmp_path, other_process):
    from enat_lightning.data.writer import ShardSetWriter

    out = tmp_path / "shards"
    _hold(lock_path(out, folder=True), other_process)
    with pytest.raises(UserError, match="in use by another tokenize run"):
        ShardSetWriter(out, {"job": 1}, codebook_size=16, latent_side=4, num_classes=2, tokenizer={"kind": "t"},
                       has_flip=False)


def test_a_sample_run_into_a_folder_in_use_is_refused(tmp_path, capsys, other_process):
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "s"
    _hold(out / ".lock", other_process)
    one_line_error(capsys, ["sample", "--ckpt", str(ckpt), "--labels", "1", "--steps", "2", "--out", str(out),
                            "--no-progress"], "in use by another sample run")


# -- every command that writes a user-named file --------------------------------------------------------
def test_fid_stats_never_replaces_a_checkpoint(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "last.ckpt")
    before = ckpt.read_bytes()
    one_line_error(capsys, ["fid-stats", "--demo", "--out", str(ckpt)], str(ckpt), "--overwrite")
    assert ckpt.read_bytes() == before


def test_fid_stats_recognises_its_own_statistics(tmp_path):
    from enat_lightning.commands.fid_stats import is_fid_stats
    from enat_lightning.evaluation.frechet import FeatureStats, save_stats

    path = save_stats(tmp_path / "s.npz", FeatureStats(np.zeros(3), np.eye(3), num_samples=2, feature="demo"))
    assert is_fid_stats(path)
    assert not is_fid_stats(tiny_checkpoint(tmp_path / "c.ckpt"))  # a zip, but not our statistics
    check_output(path, is_ours=is_fid_stats)  # a rerun may replace it


def test_import_official_never_replaces_a_checkpoint(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "last.ckpt")
    before = ckpt.read_bytes()
    one_line_error(capsys, ["import-official", "--nnet", str(tmp_path / "missing.pth"), "--preset", "enat-s",
                            "--out", str(ckpt)], str(ckpt), "--overwrite")
    assert ckpt.read_bytes() == before


def test_sample_edit_never_replaces_the_users_file(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    mine = tmp_path / "photo_edited.png"
    mine.write_bytes(b"my own edit")
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    one_line_error(capsys, ["sample", "--ckpt", str(ckpt), "--edit", str(photo), "--region", "0,0,8,8",
                            "--labels", "1", "--tokenizer", "demo", "--no-progress"], str(mine), "--overwrite")
    assert mine.read_bytes() == b"my own edit"


# -- a resumed sample run is identified by content ---------------------------------------------------------
def _sample(ckpt, out, *extra):
    return main(["sample", "--ckpt", str(ckpt), "--labels", "1,2", "--per-class", "2", "--steps", "4",
                 "--batch-size", "2", "--out", str(out), "--no-progress", *extra])


def test_resume_after_the_checkpoint_was_replaced_is_refused(tmp_path, capsys):
    from enat_lightning.models import build_model
    from enat_lightning.sampling.checkpoint import save_generator_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    out = tmp_path / "s"
    assert _sample(ckpt, out) == 0
    torch.manual_seed(1)  # another model at the same path
    save_generator_checkpoint(ckpt, TINY_ENAT, build_model(TINY_ENAT).state_dict())
    capsys.readouterr()
    one_line_error(capsys, ["sample", "--ckpt", str(ckpt), "--labels", "1,2", "--per-class", "2", "--steps", "4",
                            "--batch-size", "2", "--out", str(out), "--no-progress"], str(ckpt), "changed since")
    assert _sample(ckpt, out, "--overwrite") == 0


def test_resume_after_the_strategy_file_was_edited_is_refused(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    strategy = tmp_path / "s.yaml"
    body = "manual_ratios: [0.3, 0.6, 0.9]\nmanual_temp: [1.0, 1.0, 1.0]\nmanual_samp_temp: [1, 1, 1, 1]\n"
    strategy.write_text(body + "manual_cfg: [1, 1, 1, 1]\n")
    out = tmp_path / "s"
    assert _sample(ckpt, out, "--sampler.strategy", str(strategy)) == 0
    time.sleep(0.01)
    strategy.write_text(body + "manual_cfg: [2, 2, 2, 2]\n")
    capsys.readouterr()
    one_line_error(capsys, ["sample", "--ckpt", str(ckpt), "--labels", "1,2", "--per-class", "2", "--steps", "4",
                            "--batch-size", "2", "--out", str(out), "--no-progress", "--sampler.strategy",
                            str(strategy)], str(strategy), "changed since")


# -- folder outputs record their maker: `enat analyze`, `enat study run` -------------------------------------
def test_a_folder_output_records_its_maker(tmp_path):
    from enat_lightning.fileio import OUTPUT_RECORD

    out = tmp_path / "analysis"
    with claim_output(out, folder=True, made_by={"command": "enat analyze attention"}) as path:
        assert (path / OUTPUT_RECORD).is_file() and lock_path(path, folder=True).is_file()
        (path / "attention_removal.csv").write_text("x\n")
    with claim_output(out, folder=True, made_by={"command": "enat analyze attention"}):  # a rerun: ours
        pass
    with pytest.raises(UserError, match="--out .* already exists and was not written by this command"):
        with claim_output(out, folder=True, made_by={"command": "enat analyze similarity"}):
            pass
    users = tmp_path / "photos"
    users.mkdir()
    (users / "cat.png").write_bytes(b"png")
    with pytest.raises(UserError, match="already exists"):
        with claim_output(users, folder=True, made_by={"command": "enat analyze attention"}):
            pass
    assert sorted(p.name for p in users.iterdir()) == ["cat.png"]  # nothing written into it
    with claim_output(users, folder=True, overwrite=True, made_by={"command": "enat analyze attention"}):
        pass


def _users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    return folder


def test_analyze_out_follows_the_output_rule(tmp_path, capsys, other_process):
    from commands_helpers import TINY_NAT

    ckpt = tiny_checkpoint(tmp_path / "nat.ckpt", TINY_NAT)
    folder = _users_folder(tmp_path)
    cut = ["analyze", "attention", "--ckpt", str(ckpt), "--remove", "mask_to_visible", "--limit", "8",
           "--batch_size", "8"]
    for argv in (cut, ["analyze", "similarity", "--ckpt", str(ckpt), "--num-samples", "2", "--steps", "2"],
                 ["analyze", "attention-maps", "--ckpt", str(ckpt), "--num-samples", "2", "--steps", "2"]):
        one_line_error(capsys, [*argv, "--out", str(folder)], f"--out {folder} already exists", "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    out = tmp_path / "cut"
    assert main([*cut, "--out", str(out)]) == 0
    assert main([*cut, "--out", str(out)]) == 0  # a rerun replaces its own results
    capsys.readouterr()
    _hold(lock_path(out, folder=True), other_process)
    one_line_error(capsys, [*cut, "--out", str(out)], "in use by another run")
    assert main([*cut, "--out", str(folder), "--overwrite"]) == 0
    assert (folder / "notes.txt").read_text() == "precious" and (folder / "attention_removal.csv").is_file()


def test_study_run_out_follows_the_output_rule(tmp_path, capsys, other_process):
    from enat_lightning.fileio import OUTPUT_RECORD

    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]  # refused before any row trains
    study = ["study", "run", str(repo / "experiments/studies/fig2_attention_removal.yaml"), "--override",
             str(repo / "experiments/studies/demo_tiny.yaml")]
    folder = _users_folder(tmp_path)
    one_line_error(capsys, [*study, "--out", str(folder)], f"--out {folder} already exists", "--overwrite")
    other = tmp_path / "other_study"  # a folder another study made
    other.mkdir()
    (other / OUTPUT_RECORD).write_text('{"made_by": {"command": "enat study run", "study": "table1_disentangled"}}')
    (other / "results.md").write_text("| row |\n")
    one_line_error(capsys, [*study, "--out", str(other)], "already exists")
    ours = tmp_path / "fig2"  # this study's folder, being written by a live run
    ours.mkdir()
    (ours / OUTPUT_RECORD).write_text('{"made_by": {"command": "enat study run", "study": "fig2_attention_removal"}}')
    _hold(lock_path(ours, folder=True), other_process)
    one_line_error(capsys, [*study, "--out", str(ours)], "in use by another run")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_evaluate_out_and_save_samples_are_locked(tmp_path, capsys, other_process):
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    base = ["evaluate", "--ckpt", str(ckpt), "--tokenizer", "demo", "--feature", "demo", "--num_samples", "2"]
    out = tmp_path / "r.json"
    _hold(lock_path(out), other_process)
    one_line_error(capsys, [*base, "--out", str(out)], f"--out {out} is in use by another run")
    samples = tmp_path / "s.npz"
    _hold(lock_path(samples), other_process)
    one_line_error(capsys, [*base, "--out", str(tmp_path / "r2.json"), "--save_samples", str(samples)],
                   f"--save_samples {samples} is in use by another run")
