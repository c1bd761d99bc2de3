"""VQTokenizerModule: one step is one generator step (Lightning #17958), resume, bf16, losses, metrics."""
from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from enat_lightning.errors import UserError
from enat_lightning.tokenizer_training import CodebookUsage, LossConfig, VQTokenizerModule, codebook_stats
from enat_lightning.tokenizer_training.losses import LPIPS_KEY
from enat_lightning.tokenizers import load_tokenizer
from enat_lightning.tokenizers.autoencoder import VQAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_AE = {"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "z_channels": 32, "image_size": 8}
TINY_Q = {"kind": "vq", "codebook_size": 16, "code_dim": 4, "kmeans_init": True}
GAN = {"disc_weight": 0.5, "disc_start": 1, "disc_channels": 8, "disc_layers": 1, "lecam_weight": 0.1}


def tiny_module(**kw) -> VQTokenizerModule:
    args = {"autoencoder": TINY_AE, "quantizer": TINY_Q, "loss": GAN, "lr": 1e-3, "warmup_steps": 0, **kw}
    return VQTokenizerModule(**args)


def loader(n: int = 8, batch: int = 4) -> DataLoader:
    images = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(images, torch.zeros(n, dtype=torch.long)), batch_size=batch)


def trainer(tmp_path, max_steps: int, **kw) -> pl.Trainer:
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    return pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, callbacks=[ckpt],
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, **kw)


def optimizer_steps(tr: pl.Trainer) -> list[int]:
    """Updates each optimizer really made (Adam's own step counter of its first parameter)."""
    out = []
    for opt in tr.optimizers:
        state = opt.state[opt.param_groups[0]["params"][0]]
        out.append(int(state["step"]) if state else 0)
    return out


def test_one_step_is_one_generator_step_and_resume_continues(tmp_path):
    module = tiny_module()
    tr = trainer(tmp_path, max_steps=3)
    tr.fit(module, loader())
    # 3 generator updates (global_step), the discriminator from disc_start=1 on: 2 updates
    assert tr.global_step == 3 and optimizer_steps(tr) == [3, 2]
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    # resume: continues at 3 and stops at 5 generator steps
    tr2 = trainer(tmp_path, max_steps=5)
    tr2.fit(tiny_module(), loader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert tr2.global_step == 5 and optimizer_steps(tr2) == [5, 4]


def test_checkpoint_intervals_count_generator_steps(tmp_path):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1,
                                        filename="{step}")
    tr = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, callbacks=[ckpt], enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0)
    tr.fit(tiny_module(loss={**GAN, "disc_start": 0}), loader())
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["step=2.ckpt", "step=4.ckpt"]


def test_bf16_step_stays_finite(tmp_path):
    module = tiny_module(loss={**GAN, "disc_start": 0, "perceptual_weight": 0.5, "lpips_backbone": "random"})
    tr = trainer(tmp_path, max_steps=2, precision="bf16-mixed")
    tr.fit(module, loader())
    assert tr.global_step == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    logged = {k: float(v) for k, v in tr.callback_metrics.items()}
    for key in ("train/loss", "train/rec_loss", "train/lpips", "train/g_loss", "train/d_loss"):
        assert math.isfinite(logged[key]), (key, logged)
    # the quantizer's codebook and the discriminator's logits stay fp32
    assert module.autoencoder.quantizer._codebook.embed.dtype == torch.float32


def test_fp16_amp_refused():
    from enat_lightning.tokenizer_training.module import check_precision

    with pytest.raises(UserError, match="bf16-mixed or 32-true"):
        check_precision("16-mixed")  # (on CPU Lightning itself turns 16-mixed into bf16, so no Trainer here)
    check_precision("bf16-mixed")
    check_precision("32-true")


def test_missing_lpips_file_is_one_line_naming_file_and_key(tmp_path):
    missing = tmp_path / "vgg16-397923af.pth"
    with pytest.raises(UserError) as err:
        tiny_module(loss={"perceptual_weight": 1.0, "lpips_backbone": str(missing)})
    msg = str(err.value)
    assert "\n" not in msg and str(missing) in msg and LPIPS_KEY in msg
    with pytest.raises(UserError, match=LPIPS_KEY):  # asked for LPIPS without naming the file
        LossConfig(perceptual_weight=1.0)


def test_lpips_backbone_file_loads_into_the_slices(tmp_path):
    import torchvision

    vgg = torchvision.models.vgg16()
    path = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    module = tiny_module(loss={"perceptual_weight": 1.0, "lpips_backbone": str(path)})
    assert torch.equal(module.lpips.net.slice1[0].weight, vgg.features[0].weight)
    assert not any(k.startswith("lpips.") for k in module.state_dict())  # frozen, never checkpointed


def test_codebook_stats_of_known_codes():
    counts = torch.tensor([2, 2, 1, 1, 0, 0, 0, 0])
    stats = codebook_stats(counts)
    p = torch.tensor([2, 2, 1, 1]) / 6
    assert stats["usage"] == 0.5 and stats["used_codes"] == 4
    assert stats["perplexity"] == pytest.approx(math.exp(float(-(p * p.log()).sum())))
    assert codebook_stats(torch.ones(8))["perplexity"] == pytest.approx(8.0)  # uniform: V
    assert codebook_stats(torch.tensor([5, 0, 0]))["perplexity"] == pytest.approx(1.0)  # one code


def test_usage_accumulates_over_the_epoch_not_per_batch():
    usage = CodebookUsage(8)
    usage.update(torch.tensor([[0, 0], [1, 1]]))  # batch 1 alone: 2 of 8 codes
    usage.update(torch.tensor([[2, 3]]))          # batch 2 alone: 2 of 8 codes
    stats = usage.compute()
    assert stats["usage"] == 0.5 and stats["used_codes"] == 4
    usage.reset()
    assert usage.compute()["used_codes"] == 0


def test_validation_logs_psnr_ssim_usage_and_the_checkpoint_is_a_tokenizer(tmp_path):
    module = tiny_module(loss={"disc_weight": 0.0})
    val = loader(6, 3)
    tr = pl.Trainer(accelerator="cpu", max_steps=2, logger=pl.loggers.TensorBoardLogger(tmp_path, name="tb"),
                    callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
                    enable_progress_bar=False, enable_model_summary=False, val_check_interval=2,
                    check_val_every_n_epoch=None, num_sanity_val_steps=0)
    tr.fit(module, loader(), val)
    got = module.last_validation
    assert set(got) == {"val/psnr", "val/ssim", "val/codebook_usage", "val/perplexity"}
    # usage over the whole epoch: 6 images x 16 tokens against the encoder's own ids
    ids = module.autoencoder.eval().encode(val.dataset.tensors[0])
    assert got["val/codebook_usage"] == pytest.approx(codebook_stats(torch.bincount(ids.flatten(), minlength=16))["usage"])
    # the checkpoint is a tokenizer everywhere: the PATH.ckpt alias and the class_path form
    path = tmp_path / "ckpt" / "last.ckpt"
    tok = load_tokenizer(str(path))
    assert isinstance(tok, VQAutoencoder) and tok.codebook_size == 16 and tok.token_shape == (4, 4)
    same = load_tokenizer({"class_path": "enat_lightning.tokenizers.VQAutoencoder", "init_args": {"path": str(path)}})
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(tok.encode(images), same.encode(images)) and tok.identity() == same.identity()
    out = tok.decode(tok.encode(images))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_init_from_a_tokenizer_checkpoint(tmp_path):
    tr = trainer(tmp_path, max_steps=1)
    first = tiny_module()
    tr.fit(first, loader())
    tuned = tiny_module(init_from=str(tmp_path / "ckpt" / "last.ckpt"))
    for (k, a), b in zip(first.autoencoder.state_dict().items(), tuned.autoencoder.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(UserError, match="init_from.*not found"):
        tiny_module(init_from=str(tmp_path / "nope.ckpt"))


def test_the_official_vqgan_is_one_configuration(tmp_path, official_vqgan):
    """Fine-tuning start from the official MaskGIT VQGAN file: our autoencoder + the library's VQ encode
    exactly as the ported VQGAN does."""
    c = official_vqgan["config"]
    path = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": official_vqgan["state_dict"]}, path)
    dd = c["ddconfig"]
    module = VQTokenizerModule(
        autoencoder={"ch": dd["ch"], "ch_mult": dd["ch_mult"], "num_res_blocks": dd["num_res_blocks"],
                     "z_channels": dd["z_channels"], "image_size": dd["resolution"]},
        quantizer={"kind": "vq", "codebook_size": c["n_embed"], "code_dim": None}, init_from=str(path))
    ids = module.autoencoder.eval().encode(official_vqgan["images"])
    assert torch.equal(ids, official_vqgan["token_ids"])


def test_cosine_lr_decay_counts_generator_steps_for_both_optimizers(tmp_path):
    """``lr_decay_steps`` decays the autoencoder's and the discriminator's rates together, by generator step."""
    from enat_lightning.lr_schedule import lr_factor

    m = tiny_module(lr=1.0, warmup_steps=2, lr_decay_steps=6, min_lr_ratio=0.1)
    tr = trainer(tmp_path, max_steps=6)
    tr.fit(m, loader(n=24))
    expected = lr_factor(6 + 1, 2, 6, 0.1)  # the rate of the next step, after 6 generator steps
    assert expected == pytest.approx(0.1)
    assert [o.param_groups[0]["lr"] for o in tr.optimizers] == pytest.approx([expected, expected])
    assert m.hparams.lr_decay_steps == 6 and m.hparams.min_lr_ratio == 0.1
