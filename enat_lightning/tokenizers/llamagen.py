"""The LlamaGen VQ tokenizer (VQ-16: 16 384 l2-normalised codes of dimension 8), re-implemented.

Semantics of FoundationVision/LlamaGen ``tokenizer/tokenizer_image/vq_model.py`` (MIT; pinned by the
fixture ``tests/fixtures/llamagen_vq_tiny.safetensors``, provenance in tests/fixtures/README.md), written
anew. What differs from the MaskGIT VQGAN of ``vqgan.py``, and why it is a separate network:

* a taming-style encoder/decoder *with* attention: self-attention after every residual block of the
  lowest-resolution level and in the middle (res -> attn -> res);
* downsampling by a stride-2 3x3 conv after padding right/bottom by one (asymmetric, as taming does),
  upsampling by nearest x2 then a 3x3 conv;
* ``quant_conv`` / ``post_quant_conv`` (1x1) map the z_channels=256 features to the 8-d code space and back;
* the codes and the encoder outputs are l2-normalised before the nearest-code search (cosine distance),
  and the decoder reads the *normalised* code vectors.

Module names equal the checkpoint keys of ``vq_ds16_c2i.pt`` so it loads without renaming. Images are
[-1, 1] inside (LlamaGen trains on ``Normalize(0.5, 0.5)``); ``encode`` / ``decode`` speak [0, 1].

Shape letters: B batch, H/W image side, h/w latent side (= H/f, W/f, f = ``downsample``), C channels,
Z z_channels, E code dimension (codebook_embed_dim), V codebook size, N = B*h*w.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_ids, check_images, to_unit_range

USAGE_WINDOW = 65536  # length of the checkpoint's ``quantize.codebook_used`` buffer (a rolling id window)


@dataclass(frozen=True)
class LlamaGenVQConfig:
    """LlamaGen's ``ModelArgs`` plus the widths its ``VQModel`` fixes (ch=128, 2 residual blocks per level).

    Defaults are VQ-16 (``vq_ds16_c2i.pt``); VQ-8 is ``ch_mult=(1, 2, 2, 4)``. ``commit_loss_beta`` only
    matters for training (``training_losses``); LlamaGen's entropy loss is 0 in every released config.
    """

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    commit_loss_beta: float = 0.25
    resolution: int = 256  # training size (token_shape); the network is convolutional: any H, W divisible by f

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult must be a non-empty list of positive ints, got {list(self.ch_mult)}")
        for name in ("codebook_size", "codebook_embed_dim", "ch", "num_res_blocks", "z_channels", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for width in {self.ch * m for m in self.ch_mult}:
            if width % 32:
                raise ValueError(f"every width ch*ch_mult must be divisible by 32 (GroupNorm groups), got {width}")
        if self.codebook_size > USAGE_WINDOW:
            raise ValueError(f"codebook_size must be <= {USAGE_WINDOW}, got {self.codebook_size}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d


PRESETS = {"vq-16": LlamaGenVQConfig(), "vq-8": LlamaGenVQConfig(ch_mult=(1, 2, 2, 4))}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice; a 1x1 ``nin_shortcut`` maps the *input* when the width changes."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # LlamaGen's dropout is 0 in every config: left out
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1 conv projections, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, h*w, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # scale 1/sqrt(C)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming's asymmetric padding: right and bottom only


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution: residual blocks (``res``), attention after each at the lowest level (``attn``),
    then ``downsample`` / ``upsample`` unless it is the last level walked."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, attention: bool, resample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(n_blocks if attention else 0))
        if isinstance(resample, Downsample):
            self.downsample = resample
        elif isinstance(resample, Upsample):
            self.upsample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


def _mid(channels: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels)])


class Encoder(nn.Module):
    def __init__(self, cfg: LlamaGenVQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList(
            _Level(cfg.ch if i == 0 else widths[i - 1], w, cfg.num_res_blocks, attention=i == last,
                   resample=Downsample(w) if i != last else None)
            for i, w in enumerate(widths))
        self.mid = _mid(widths[-1])
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1, 1] -> (B, Z, h, w)
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Levels walked from the lowest resolution up; one more residual block per level than the encoder."""

    def __init__(self, cfg: LlamaGenVQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in reversed(cfg.ch_mult)]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[0], 3, padding=1)
        self.mid = _mid(widths[0])
        self.conv_blocks = nn.ModuleList(
            _Level(widths[max(i - 1, 0)], w, cfg.num_res_blocks + 1, attention=i == 0,
                   resample=Upsample(w) if i != last else None)
            for i, w in enumerate(widths))
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight differentiates against."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z, h, w) -> (B, 3, H, W) in ~[-1, 1]
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class QuantizerOutput(NamedTuple):
    z_q: torch.Tensor        # (B, E, h, w), straight-through: forward = codes, gradient = encoder output
    ids: torch.Tensor        # (B, h, w) int64
    codebook_loss: torch.Tensor  # ||sg(z) - e||^2: moves the codes
    commit_loss: torch.Tensor    # beta * ||z - sg(e)||^2: moves the encoder


class VectorQuantizer(nn.Module):
    """Nearest code by squared distance, both sides l2-normalised when ``l2_norm`` (cosine codes)."""

    def __init__(self, codebook_size: int, dim: int, l2_norm: bool, beta: float):
        super().__init__()
        self.l2_norm, self.beta = l2_norm, beta
        self.embedding = nn.Embedding(codebook_size, dim)
        # LlamaGen keeps a rolling window of recent ids in the state dict (a display statistic); kept only
        # so its checkpoints load strictly -- usage is counted by our callbacks over a whole epoch instead.
        self.register_buffer("codebook_used", torch.zeros(USAGE_WINDOW))
        with torch.no_grad():  # LlamaGen's init: U(-1/V, 1/V), then unit rows when l2-normalised
            self.embedding.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
            if l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))

    def codes(self) -> torch.Tensor:  # (V, E), fp32: distances and normalisation never run in bf16
        e = self.embedding.weight.float()
        return F.normalize(e, dim=-1) if self.l2_norm else e

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        z = z.float().permute(0, 2, 3, 1)  # (B, h, w, E)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        e = self.codes()
        flat = z.reshape(-1, z.shape[-1])  # (N, E)
        # ||z||^2 + ||e||^2 - 2 z.e, all three terms as LlamaGen sums them (same rounding -> same argmin)
        dist = flat.square().sum(1, keepdim=True) + e.square().sum(1) - 2 * flat @ e.t()  # (N, V)
        ids = torch.argmin(dist, dim=1)  # (N,)
        z_q = e[ids].view_as(z)
        codebook_loss = torch.mean((z_q - z.detach()) ** 2)
        commit_loss = self.beta * torch.mean((z_q.detach() - z) ** 2)
        z_q = z + (z_q - z).detach()
        return QuantizerOutput(z_q.permute(0, 3, 1, 2), ids.view(b, h, w), codebook_loss, commit_loss)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:  # (B, h, w) -> (B, E, h, w)
        return self.codes()[ids].permute(0, 3, 1, 2)


class AutoencoderOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, 3, H, W) in ~[-1, 1]
    quantized: QuantizerOutput


class LlamaGenVQ(nn.Module):
    """LlamaGen's VQ autoencoder behind the project's tokenizer interface (encode/decode in [0, 1])."""

    def __init__(self, cfg: LlamaGenVQConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LlamaGenVQConfig()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.codebook_embed_dim, cfg.codebook_l2_norm,
                                        cfg.commit_loss_beta)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)
        self.source = "random init"

    # -- the tokenizer interface ------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    @property
    def downsample(self) -> int:
        return self.cfg.downsample

    @property
    def token_shape(self) -> tuple[int, int]:
        """The id grid at the training resolution (256 -> 16x16 for VQ-16)."""
        return (self.cfg.resolution // self.downsample,) * 2

    @classmethod
    def from_config(cls, path: str, config: dict | str | None = None, trust_pickle: bool = False) -> "LlamaGenVQ":
        """The registry constructor (``init_args``): LlamaGen's checkpoint ``path`` (``vq_ds16_c2i.pt``);
        ``config`` a preset name (``vq-16`` default, ``vq-8``) or LlamaGenVQConfig fields."""
        return cls.from_checkpoint(path, config, trust_pickle=trust_pickle)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> int64 ids (B, H/f, W/f)."""
        check_images(images, self.downsample)
        return self.quantize(self.quant_conv(self.encoder(images * 2 - 1))).ids

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> fp32 images (B, 3, h*f, w*f) in [0, 1] (decoded in fp32 under autocast too)."""
        check_ids(ids, self.codebook_size)
        device = self.post_quant_conv.weight.device
        with torch.autocast(device.type, enabled=False):
            x = self.decode_latent(self.quantize.lookup(ids.long()).float())
        return to_unit_range((x + 1) / 2)

    def identity(self) -> dict:
        return {"kind": "llamagen-vq", "config": self.cfg.to_dict(), "source": self.source}

    # -- training / parity path -------------------------------------------------------------------
    def decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:  # (B, E, h, w) -> (B, 3, H, W) in ~[-1, 1]
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """x in [-1, 1] (LlamaGen's training range) -> reconstruction + quantiser losses."""
        q = self.quantize(self.quant_conv(self.encoder(x)))
        return AutoencoderOutput(self.decode_latent(q.z_q), q)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: LlamaGenVQConfig | dict | str | None = None,
                        trust_pickle: bool = False) -> "LlamaGenVQ":
        """A LlamaGen VQ checkpoint (``vq_ds16_c2i.pt``: ``{"model": state_dict, ...}``, or a bare state dict)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LlamaGen VQ checkpoint {path} not found (tokenizer init_args.path); "
                                    "download vq_ds16_c2i.pt from the LlamaGen release yourself -- nothing is "
                                    "downloaded at run time")
        model = cls(resolve_config(config))
        load_llamagen_weights(model, _read(path, trust_pickle), source=str(path))
        model.source = path.name
        return model.eval()


def resolve_config(config: LlamaGenVQConfig | dict | str | None) -> LlamaGenVQConfig:
    if config is None:
        return PRESETS["vq-16"]
    if isinstance(config, LlamaGenVQConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown LlamaGen VQ preset {config!r}; expected one of {sorted(PRESETS)}")
        return PRESETS[config]
    unknown = sorted(set(config) - set(LlamaGenVQConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown LlamaGen VQ config keys {unknown}; allowed: "
                         f"{sorted(LlamaGenVQConfig.__dataclass_fields__)}")
    return LlamaGenVQConfig(**config)


def load_llamagen_weights(model: LlamaGenVQ, state_dict: dict, source: str = "state_dict") -> LlamaGenVQ:
    """Load LlamaGen's keys as they are. Accepts the training checkpoint (``model`` / ``ema`` entries)."""
    for key in ("ema", "model", "state_dict"):  # the EMA weights are the ones LlamaGen evaluates with
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k != "quantize.codebook_used"]  # absent when trained with show_usage off
    if missing or unexpected:
        raise ValueError(f"{source} does not match the LlamaGen VQ layout {model.cfg.to_dict()}: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return model


def _read(path: Path, trust_pickle: bool) -> dict:
    """A checkpoint's top-level dict: safetensors, or torch.load restricted to tensors unless trusted."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from enat_lightning.sampling.checkpoint import UntrustedCheckpointError, read_torch_file

    try:
        obj = read_torch_file(path, what="LlamaGen VQ checkpoint", trust=trust_pickle,
                              make_hint="download LlamaGen's vq_ds16_c2i.pt and give its path as init_args.path")
    except UntrustedCheckpointError as err:  # LlamaGen saves its argparse args beside the weights
        raise UntrustedCheckpointError(f"{err}; if you trust the file, pass trust_pickle: true") from err
    if not isinstance(obj, dict):
        raise ValueError(f"LlamaGen VQ checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj
