"""The tokenizer losses: reconstruction, LPIPS from local weights, PatchGAN hinge + adaptive weight, LeCam.

Pure torch (``lpips`` is imported only when a perceptual loss is asked for). The discriminator's logits
and losses run in fp32 under bf16 autocast: hinge margins of bf16 logits are coarse, and the peers'
bf16 NaN reports (diffusers #5437, OmniTokenizer #8) come from exactly there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enat_lightning.errors import UserError

LPIPS_KEY = "model.init_args.loss.lpips_backbone"
RANDOM_BACKBONE = "random"  # tests only: an untrained backbone with the wheel's linear layers


@dataclass(frozen=True)
class LossConfig:
    """Weights of the generator loss terms and the discriminator's settings.

    recon: 'l1' or 'l2' pixel loss (weight ``recon_weight``). perceptual_weight > 0 adds LPIPS with the
    ``lpips`` wheel's linear layers over the backbone weights in ``lpips_backbone`` (a local torchvision
    ``vgg16``/``alexnet`` state dict, e.g. vgg16-397923af.pth; nothing is downloaded). quantizer_weight
    multiplies the quantizer's own loss (commitment / codebook / entropy). disc_weight > 0 trains a
    PatchGAN (``disc_layers`` stride-2 layers, ``disc_channels`` wide) with the hinge loss from generator
    step ``disc_start`` on; ``adaptive_weight`` balances its gradient against the reconstruction loss
    at the decoder's last layer (Esser et al. 2021, Eq. 7). lecam_weight > 0 adds LeCam regularisation
    (Tseng et al. 2021) with EMA decay ``lecam_decay``.
    """

    recon: str = "l1"
    recon_weight: float = 1.0
    perceptual_weight: float = 0.0
    lpips_net: str = "vgg"
    lpips_backbone: str | None = None
    quantizer_weight: float = 1.0
    disc_weight: float = 0.0
    disc_start: int = 0
    disc_channels: int = 64
    disc_layers: int = 3
    adaptive_weight: bool = True
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.recon not in ("l1", "l2"):
            raise ValueError(f"loss.recon {self.recon!r}: choose 'l1' or 'l2'")
        if self.lpips_net not in ("vgg", "alex"):
            raise ValueError(f"loss.lpips_net {self.lpips_net!r}: choose 'vgg' or 'alex'")
        if self.perceptual_weight > 0 and not self.lpips_backbone:
            raise UserError(f"loss.perceptual_weight > 0 needs {LPIPS_KEY}: a local torchvision "
                            f"{'vgg16' if self.lpips_net == 'vgg' else 'alexnet'} weights file")
        if self.disc_start < 0 or self.disc_layers < 1:
            raise ValueError("loss.disc_start must be >= 0 and loss.disc_layers >= 1")

    @property
    def uses_disc(self) -> bool:
        return self.disc_weight > 0


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    diff = recon.float() - target.float()
    return diff.abs().mean() if kind == "l1" else diff.pow(2).mean()


# ------------------------------------------------------------------------------------------- LPIPS

def load_lpips(net: str, backbone: str) -> nn.Module:
    """LPIPS (frozen, eval) with the wheel's linear layers and the backbone weights of a local file.
    ``backbone == 'random'`` keeps the backbone randomly initialised (tests). Missing file -> one line."""
    if backbone != RANDOM_BACKBONE and not Path(backbone).expanduser().is_file():
        raise UserError(f"{LPIPS_KEY}: LPIPS backbone weights file {backbone} not found (a torchvision "
                        f"{'vgg16' if net == 'vgg' else 'alexnet'} state dict, e.g. vgg16-397923af.pth; "
                        f"nothing is downloaded)")
    import warnings

    import lpips

    with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation, from inside lpips
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if backbone != RANDOM_BACKBONE:
        state = torch.load(Path(backbone).expanduser(), map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        # lpips splits torchvision's `features` Sequential into slices whose children keep their index names
        own = {f"{name}.{p}": (mod, p) for s in model.net.children() for name, mod in s.named_children()
               for p, _ in mod.named_parameters(recurse=False)}
        missing = sorted(set(own) - set(state))
        if missing:
            raise UserError(f"{LPIPS_KEY}: {backbone} is not a torchvision {net} state dict (missing "
                            f"features.{missing[0]} and {len(missing) - 1} more)")
        with torch.no_grad():
            for key, (mod, p) in own.items():
                getattr(mod, p).copy_(state[key])
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# ----------------------------------------------------------------------------------- discriminator

class PatchGAN(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017; taming's NLayerDiscriminator): (B, 3, H, W) in [-1, 1]
    -> patch logits (B, 1, h', w'). BatchNorm as in taming / LlamaGen."""

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            width = out
        mods.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        self.apply(_init_disc)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):  # logits in fp32 (module docstring)
            return self.net(images.float())


def _init_disc(m: nn.Module) -> None:
    # taming's weights_init: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales -- the GAN starts near balance
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.float().mean()


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """|grad nll| / |grad g_loss| at the decoder's last layer (Esser et al. 2021, Eq. 7), detached."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_nll.float().norm() / (g_gan.float().norm() + 1e-4)).clamp(0.0, max_weight).detach()


class LeCam(nn.Module):
    """LeCam regularisation (Tseng et al. 2021): keeps real / fake logits near the other side's EMA."""

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        real, fake = logits_real.float(), logits_fake.float()
        with torch.no_grad():
            self.ema_real.lerp_(real.mean(), 1 - self.decay)
            self.ema_fake.lerp_(fake.mean(), 1 - self.decay)
        return F.relu(real - self.ema_fake).pow(2).mean() + F.relu(self.ema_real - fake).pow(2).mean()
