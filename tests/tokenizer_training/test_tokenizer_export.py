"""`enat tokenizer export`: the slim file of a trained tokenizer encodes and decodes exactly as its checkpoint."""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from enat_lightning.cli import main
from enat_lightning.tokenizer_training import VQTokenizerModule
from enat_lightning.tokenizers import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_ckpt(tmp_path_factory):
    """last.ckpt of a 2-step tokenizer run with a discriminator (so the checkpoint holds two optimizers' state)."""
    d = tmp_path_factory.mktemp("tok_run")
    module = VQTokenizerModule(
        autoencoder={"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "z_channels": 32, "image_size": 8},
        quantizer={"kind": "vq", "codebook_size": 16, "code_dim": 4, "kmeans_init": True},
        loss={"disc_weight": 0.5, "disc_start": 0, "disc_channels": 8, "disc_layers": 1}, lr=1e-3, warmup_steps=0)
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=d, save_last=True, every_n_train_steps=1)
    pl.Trainer(accelerator="cpu", max_steps=2, logger=False, callbacks=[ckpt], enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(
        module, DataLoader(TensorDataset(images, torch.zeros(8, dtype=torch.long)), batch_size=4))
    return d / "last.ckpt"


def test_export_is_slim_and_decodes_identically(run_ckpt, tmp_path, capsys):
    out = tmp_path / "tok.pt"
    assert main(["tokenizer", "export", "--ckpt", str(run_ckpt), "--out", str(out)]) == 0
    assert f"use it as --tokenizer {out}" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"enat_tokenizer", "state_dict"}  # no optimizer state, loops, callbacks
    assert all(k.startswith("autoencoder.") for k in saved["state_dict"])  # no discriminator
    assert out.stat().st_size < run_ckpt.stat().st_size / 2
    full = load_tokenizer(str(run_ckpt))
    slim = load_tokenizer({"class_path": "enat_lightning.tokenizers.VQAutoencoder", "init_args": {"path": str(out)}})
    assert type(slim).__name__ == "VQAutoencoder" and slim.identity() == full.identity()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ids = full.encode(x)
    assert torch.equal(slim.encode(x), ids)
    assert torch.equal(slim.decode(ids), full.decode(ids))
    assert load_tokenizer(str(out)).identity() == full.identity()  # the short PATH.pt spelling finds it too


def test_output_rule_and_errors(run_ckpt, tmp_path, capsys):
    out = tmp_path / "tok.pt"
    args = ["tokenizer", "export", "--ckpt", str(run_ckpt), "--out", str(out)]
    assert main(args) == 0 and main(args) == 0  # a rerun replaces its own export
    other = tmp_path / "mine.pt"
    other.write_bytes(b"a user's file")
    capsys.readouterr()

    def one_line(argv, needle):
        assert main(argv) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], lines

    one_line(["tokenizer", "export", "--ckpt", str(run_ckpt), "--out", str(other)], "--overwrite")
    assert other.read_bytes() == b"a user's file"
    assert main(["tokenizer", "export", "--ckpt", str(run_ckpt), "--out", str(other), "--overwrite"]) == 0
    one_line(["tokenizer", "export", "--ckpt", str(run_ckpt), "--out", str(tmp_path / "tok.bin")], ".pt")
    one_line(["tokenizer", "export", "--ckpt", str(run_ckpt), "--out", str(run_ckpt)], "is the --ckpt itself")
    one_line(["tokenizer", "export", "--ckpt", str(tmp_path / "nowhere.ckpt"), "--out", str(out)], "nowhere.ckpt")
    from enat_lightning.models import ENATConfig, build_model
    from enat_lightning.sampling.checkpoint import save_generator_checkpoint

    cfg = ENATConfig(codebook_size=16, num_classes=2, grid=2, width=32, heads=2, enc_depth=1, dec_depth=1)
    gen = save_generator_checkpoint(tmp_path / "gen.ckpt", cfg, build_model(cfg).state_dict())
    one_line(["tokenizer", "export", "--ckpt", str(gen), "--out", str(tmp_path / "g.pt")], "not a tokenizer checkpoint")
