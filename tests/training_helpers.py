"""Helpers for the training tests (tests/test_training_cli.py, tests/reliability/test_training_*.py): a tiny
LightningCLI config on in-memory synthetic tokens, and `enat` run in this process or in a subprocess."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, *, max_steps: int = 4, every_n: int = 2, top_k: int = 1, name: str = "run",
                num_train: int = 64, shuffle: bool = True) -> str:
    """Writes tmp_path/tiny.yaml: a 2+1-block ENAT (width 32) on synthetic 4x4 tokens, TensorBoard run
    dir tmp_path/<name>, checkpoints every `every_n` steps with last.ckpt. Returns its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer:
          accelerator: cpu
          max_steps: {max_steps}
          enable_progress_bar: false
          enable_model_summary: false
          limit_val_batches: 0
          log_every_n_steps: 1
          logger:
            class_path: lightning.pytorch.loggers.TensorBoardLogger
            init_args: {{save_dir: {tmp_path}, name: {name}, version: ""}}
          callbacks:
            - class_path: lightning.pytorch.callbacks.ModelCheckpoint
              init_args: {{save_last: true, every_n_train_steps: {every_n}, save_top_k: {top_k}}}
        model:
          net:
            class_path: enat_lightning.models.ENATConfig
            init_args: {{codebook_size: 32, num_classes: 4, grid: 4, width: 32, heads: 2, enc_depth: 2, dec_depth: 1}}
          lr: 0.003
          warmup_steps: 0
          ema_decay: 0.9
        data:
          class_path: enat_lightning.data.synthetic.SyntheticTokenDataModule
          init_args:
            num_classes: ${{model.net.init_args.num_classes}}
            codebook_size: ${{model.net.init_args.codebook_size}}
            grid: ${{model.net.init_args.grid}}
            num_train: {num_train}
            num_val: 0
            batch_size: 8
            shuffle: {str(shuffle).lower()}
        """))
    return str(path)


def fit_here(*args: str) -> tuple[int, str]:
    """`enat fit ARGS` in this process -> (exit code, stderr)."""
    from enat_lightning import cli

    err = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stderr(err):
            rc = cli.main(["fit", *args])
    finally:
        torch.set_num_threads(threads)
    return rc, err.getvalue()


def enat_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def enat_popen(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "enat_lightning.cli", *args], cwd=REPO, env=env or enat_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def step_of(path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


import lightning.pytorch as pl  # noqa: E402


class SignalAt(pl.Callback):
    """Sends `signum` (by name) to this process when training reaches `step` (a real signal, delivered
    mid-step: between the batch start and the optimizer step)."""

    def __init__(self, step: int, signum: str = "SIGUSR1"):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(__import__("signal"), self.signum))
