"""SLURM pre-emption on CPU (issue 17, "Resume must not lose pre-empted work"): SLURM's variables set,
`scontrol` stubbed on PATH, SIGUSR1 mid-run -> last.ckpt at the next step boundary, `scontrol requeue`, stop;
the requeued run (`--ckpt_path last`) ends with the weights of an uninterrupted run. `--ckpt_path last`
also takes a newer SLURM hpc_ckpt_N.ckpt over an older last.ckpt."""
from __future__ import annotations

import shutil

import pytest
import torch

from training_helpers import REPO, fit_here, step_of, tiny_config

SLURM_YAML = str(REPO / "experiments" / "cluster" / "slurm.yaml")


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A one-task SLURM job 4242 and an `scontrol` on PATH that records its arguments."""
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "enat", "SLURM_NTASKS": "1",
                       "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(key, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.log"
    stub = bin_dir / "scontrol"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return record


def _signal_at(step: int) -> str:
    return f"--trainer.callbacks+={{class_path: training_helpers.SignalAt, init_args: {{step: {step}}}}}"


def test_sigusr1_saves_requeues_and_the_requeued_run_equals_an_uninterrupted_one(tmp_path, slurm):
    # one batch per epoch, unshuffled: every step sees the same data, interrupted or not
    common = dict(max_steps=12, every_n=1000, num_train=8, shuffle=False)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    cfg_a, cfg_b = tiny_config(a, **common), tiny_config(b, **common)

    rc, err = fit_here("-c", cfg_a, "-c", SLURM_YAML, "--ckpt_path", "last", _signal_at(5))
    assert rc == 0, err
    last = a / "run" / "checkpoints" / "last.ckpt"
    assert step_of(last) == 6  # the signal came during step 5: saved at its end, then stopped
    assert "pre-empted at step 6; last.ckpt saved, job requeued" in err
    assert slurm.read_text().split() == ["requeue", "4242"]
    assert not list(REPO.glob("hpc_ckpt_*.ckpt")) and not list(a.rglob("hpc_ckpt_*.ckpt"))  # we saved last.ckpt

    rc, err = fit_here("-c", cfg_a, "-c", SLURM_YAML, "--ckpt_path", "last")  # the requeued job: same command
    assert rc == 0 and f"resuming from {last}" in err, err
    assert fit_here("-c", cfg_b, "-c", SLURM_YAML, "--ckpt_path", "last")[0] == 0  # uninterrupted
    requeued = torch.load(last, weights_only=True)
    straight = torch.load(b / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert requeued["global_step"] == straight["global_step"] == 12
    assert slurm.read_text().split() == ["requeue", "4242"]  # requeued once
    for k, v in straight["state_dict"].items():
        torch.testing.assert_close(requeued["state_dict"][k], v, atol=1e-6, rtol=0, msg=k)


def test_ckpt_path_last_takes_a_newer_hpc_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=4, every_n=2, top_k=-1)
    assert fit_here("-c", cfg)[0] == 0
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    shutil.copy(ckpts / "last.ckpt", run / "hpc_ckpt_1.ckpt")  # step 4, as Lightning's SLURM handler writes it
    for f in ("last.ckpt", "epoch=0-step=4.ckpt"):
        shutil.copy(ckpts / "epoch=0-step=2.ckpt", ckpts / f)  # last.ckpt is older than the hpc checkpoint
        (ckpts / f"{f}.sha256").unlink()
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "5", "--ckpt_path", "last")
    assert rc == 0 and f"resuming from {run / 'hpc_ckpt_1.ckpt'}" in err, err
    assert step_of(ckpts / "last.ckpt") == 5


def test_sigusr1_outside_slurm_saves_and_stops_without_requeue(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    cfg = tiny_config(tmp_path, max_steps=50, every_n=1000)
    rc, err = fit_here("-c", cfg, _signal_at(3))
    assert rc == 0, err
    assert step_of(tmp_path / "run" / "checkpoints" / "last.ckpt") == 4
    assert "pre-empted at step 4; last.ckpt saved, continue with --ckpt_path last" in err
