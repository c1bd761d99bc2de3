"""A run directory holds one run, the config is what runs, and the last steps are never lost (issue 14
items 3, 4, 5, 8): last.ckpt at the end and on Ctrl-C; architecture mismatches name both values; optimiser
settings on the command line win on resume; fresh fits into an existing run and concurrent writers are
refused; failed checks write nothing; bad max_steps is one line."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from training_helpers import enat_popen, fit_here, step_of, tiny_config


def test_end_of_training_saves_last_even_between_intervals(tmp_path):
    """max_steps 5 with a checkpoint every 2 steps: last.ckpt holds step 5 (not 4)."""
    cfg = tiny_config(tmp_path, max_steps=5, every_n=2)
    assert fit_here("-c", cfg)[0] == 0
    assert step_of(tmp_path / "run" / "checkpoints" / "last.ckpt") == 5


def test_ctrl_c_saves_last_and_resume_continues(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=100000, every_n=1000)  # no periodic checkpoint before the interrupt
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = enat_popen("fit", "-c", cfg)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / "run").glob("events.out.tfevents.*")):  # training has started
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    stopped = step_of(last)
    assert stopped > 0 and f"interrupted at step {stopped}; last.ckpt saved" in err
    assert "Traceback" not in err
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", str(stopped + 2), "--ckpt_path", "last")
    assert rc == 0 and f"resuming from {last}" in err, err
    assert step_of(last) == stopped + 2


@pytest.fixture
def trained(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, every_n=2)
    assert fit_here("-c", cfg)[0] == 0
    return cfg, tmp_path / "run"


@pytest.mark.parametrize("how", ["file", "last"])
def test_architecture_mismatch_names_both_values_and_writes_nothing(trained, how):
    cfg, run = trained
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    ckpt = str(run / "checkpoints" / "last.ckpt") if how == "file" else "last"
    rc, err = fit_here("-c", cfg, "--model.net.init_args.width", "64", "--model.net.init_args.heads", "4",
                       "--trainer.max_steps", "4", "--ckpt_path", ckpt)
    assert rc == 2, err
    line = [x for x in err.splitlines() if x.startswith("enat: error:")][0]
    assert "model.net.init_args.width: checkpoint 32, config 64" in line
    assert "model.net.init_args.heads: checkpoint 2, config 4" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # config.yaml not rewritten


@pytest.mark.parametrize("how", ["file", "last"])
def test_command_line_optimiser_settings_win_on_resume(trained, how):
    cfg, run = trained
    last = run / "checkpoints" / "last.ckpt"
    ckpt = str(last) if how == "file" else "last"
    rc, err = fit_here("-c", cfg, "--model.lr", "0.01", "--model.ema_decay", "0.5", "--model.weight_decay", "0.1",
                       "--trainer.max_steps", "4", "--ckpt_path", ckpt)
    assert rc == 0, err
    assert "model.lr: checkpoint 0.003 -> 0.01" in err and "model.ema_decay: checkpoint 0.9 -> 0.5" in err
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4
    assert saved["hyper_parameters"]["lr"] == 0.01 and saved["hyper_parameters"]["ema_decay"] == 0.5
    group = saved["optimizer_states"][0]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.01) and group["weight_decay"] == 0.1  # not the restored 0.003 / 0.03
    assert saved["lr_schedulers"][0]["base_lrs"] == [0.01]


def test_fresh_fit_into_an_existing_run_is_refused(trained):
    cfg, run = trained
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "3")
    assert rc == 2
    assert f"enat: error: {run} already holds a run: continue it with --ckpt_path last" in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # no last-v1.ckpt, no config rewrite
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "3", "--ckpt_path", "last")  # resumes the real run
    assert rc == 0 and step_of(run / "checkpoints" / "last.ckpt") == 3, err


def test_a_second_concurrent_writer_is_refused_and_a_stale_lock_is_taken_over(trained):
    import os

    cfg, run = trained
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{os.uname().nodename} {holder.pid}\n")
        rc, err = fit_here("-c", cfg, "--trainer.max_steps", "3", "--ckpt_path", "last")
        assert rc == 2 and f"{run} is in use by another training run ({os.uname().nodename} pid {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "3", "--ckpt_path", "last")  # its process is gone: stale
    assert rc == 0, err
    assert not (run / ".lock").exists()


def test_grid_mismatch_from_data_names_the_data_key_and_writes_nothing(trained):
    cfg, run = trained
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = fit_here("-c", cfg, "--data.init_args.grid", "8", "--ckpt_path", "last")
    assert rc == 2 and "enat: error: model.net.init_args.grid=4 but data.init_args.grid=8" in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_codebook_mismatch_is_one_line_naming_the_shards_and_the_key(tmp_path):
    """The data module is given the network's codebook_size (one name, linked) and checks its shards once."""
    from enat_lightning.demo.data import ensure_demo_data
    from training_helpers import REPO

    ensure_demo_data()  # the demo's MNIST shards: 64 codes
    rc, err = fit_here("-c", str(REPO / "experiments" / "demo.yaml"), "--model.net.init_args.codebook_size", "128",
                       f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps", "1",
                       f"--data.init_args.train_shards={REPO / 'data/demo/shards/train'}",
                       f"--data.init_args.val_shards={REPO / 'data/demo/shards/val'}",
                       f"--data.init_args.tokenizer.path={REPO / 'data/demo/tokenizer_vq.pt'}", "--trainer.callbacks=[]")
    assert rc == 2, err
    assert "enat: error: codebook 64 in " in err and "vs model 128 (model.net.init_args.codebook_size)" in err, err
    assert not list(tmp_path.rglob("*.ckpt"))
    # the data section cannot repeat a linked value
    rc, err = fit_here("-c", str(REPO / "experiments" / "demo.yaml"), "--data.init_args.codebook_size", "128",
                       f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps", "1")
    assert rc == 2 and "codebook_size" in err, err


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_non_positive_max_steps_is_one_line(tmp_path, steps):
    rc, err = fit_here("-c", tiny_config(tmp_path), "--trainer.max_steps", steps)
    assert rc == 2 and f"trainer.max_steps={steps}: give a positive number" in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_checkpoint_of_the_older_layout_resumes(trained):
    """EMA under `ema.` and `net` as cfg.to_dict() (before AveragedModel / the one config form): resumes."""
    from enat_lightning.models import config_from_dict

    cfg, run = trained
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    sd = ckpt["state_dict"]
    ema = {k: sd[k] for k in sd if k.startswith("ema.module.")}
    ckpt["state_dict"] = {**{k: v for k, v in sd.items() if not k.startswith("ema.")},
                          **{"ema." + k[len("ema.module."):]: v for k, v in ema.items()}}
    ckpt["hyper_parameters"]["net"] = config_from_dict(ckpt["hyper_parameters"]["net"]).to_dict()
    old = run.parent / "old.ckpt"
    torch.save(ckpt, old)
    rc, err = fit_here("-c", cfg, "--trainer.max_steps", "3", "--ckpt_path", str(old))
    assert rc == 0, err
    new = torch.load(last, weights_only=True)
    assert new["global_step"] == 3 and any(k.startswith("ema.module.") for k in new["state_dict"])
