"""VQAutoencoder: a trainable tokenizer -- the MaskGIT VQGAN encoder/decoder family + a library quantizer.

The encoder and decoder are the ported MaskGIT VQGAN's (tokenizers/vqgan.py) with every size a config
field, so the official VQGAN is one configuration (``AutoencoderConfig.maskgit_f16()``). The quantizer is
``vector-quantize-pytorch``'s (a maintained library, not hand-written): ``VectorQuantize`` (EMA codebook,
k-means init, dead-code restart, cosine / l2-normalised codes), ``FSQ`` or ``LFQ``. ``enat fit`` trains it
(enat_lightning/tokenizer_training/); this file is the network and the Tokenizer protocol only.

Pixels: the network eats and returns [0, 1] images, as the MaskGIT VQGAN does.
Shape letters: B batch, H/W image side, h/w token grid (H/f, W/f; f = ``downsample``), C z_channels,
D code dimension, V codebook size.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .base import check_ids, check_images
from .vqgan import Decoder, Encoder, VQGANConfig

QUANTIZERS = ("vq", "fsq", "lfq")
CLASS_PATH = "enat_lightning.tokenizers.VQAutoencoder"  # what a trained tokenizer's file records as its class


@dataclass(frozen=True)
class AutoencoderConfig:
    """Encoder/decoder sizes. Widths ``ch * ch_mult[i]`` must be multiples of 32 (GroupNorm groups);
    ``downsample`` = 2 ** (len(ch_mult) - 1); ``attention`` adds a self-attention block in the middle of
    the encoder and of the decoder (the MaskGIT VQGAN has none); ``image_size``: the training size (any
    multiple of ``downsample`` encodes)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    attention: bool = False
    image_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if self.image_size % self.downsample:
            raise ValueError(f"autoencoder.image_size {self.image_size} is not a multiple of the downsample "
                             f"factor {self.downsample} (2 ** (len(ch_mult) - 1))")
        self.vqgan_config()  # width / GroupNorm checks, with the VQGAN's messages

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample

    def vqgan_config(self, codebook_size: int = 1024) -> VQGANConfig:
        return VQGANConfig(ch=self.ch, ch_mult=self.ch_mult, num_res_blocks=self.num_res_blocks,
                           z_channels=self.z_channels, embed_dim=self.z_channels, resolution=self.image_size,
                           n_embed=codebook_size)

    @classmethod
    def maskgit_f16(cls) -> "AutoencoderConfig":
        """The official MaskGIT / MAGE / ENAT VQGAN (``vq-f16-jax.yaml``), with QuantizerConfig(kind='vq',
        codebook_size=1024, code_dim=None)."""
        return cls()

    def to_dict(self) -> dict:
        return {**asdict(self), "ch_mult": list(self.ch_mult)}


@dataclass(frozen=True)
class QuantizerConfig:
    """The quantizer (vector-quantize-pytorch).

    kind: 'vq' (VectorQuantize), 'fsq' (FSQ: ``fsq_levels``, codebook_size = their product) or 'lfq' (LFQ:
        codebook_size a power of 2, code_dim = log2 of it).
    codebook_size: V, the number of token ids.
    code_dim: D of the codebook vectors; None = z_channels. vq: a smaller D adds the library's linear
        projections in and out (low-dimensional codes use the codebook better).
    vq only: ``ema_update`` (EMA codebook, decay ``ema_decay``; False = learned by the codebook loss),
        ``kmeans_init`` (codebook from k-means of the first batch), ``dead_code_threshold`` (codes whose EMA
        usage falls below it are restarted from batch vectors; 0 = off), ``cosine`` (l2-normalised codes,
        cosine distance), ``commitment_weight`` (beta of the commitment loss).
    lfq only: ``entropy_weight`` (the entropy penalty that spreads usage).
    """

    kind: str = "vq"
    codebook_size: int = 1024
    code_dim: int | None = None
    ema_update: bool = True
    ema_decay: float = 0.99
    kmeans_init: bool = False
    dead_code_threshold: float = 0.0
    cosine: bool = False
    commitment_weight: float = 0.25
    fsq_levels: tuple[int, ...] = ()
    entropy_weight: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(v) for v in self.fsq_levels))
        if self.kind not in QUANTIZERS:
            raise ValueError(f"quantizer.kind {self.kind!r}: choose one of {list(QUANTIZERS)}")
        if self.codebook_size < 2:
            raise ValueError(f"quantizer.codebook_size must be >= 2, got {self.codebook_size}")
        if self.kind == "fsq":
            prod = 1
            for v in self.fsq_levels:
                prod *= v
            if not self.fsq_levels or prod != self.codebook_size:
                raise ValueError(f"quantizer.fsq_levels {list(self.fsq_levels)} (product {prod}) must multiply to "
                                 f"quantizer.codebook_size {self.codebook_size}")
        if self.kind == "lfq" and self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"quantizer.codebook_size {self.codebook_size} must be a power of 2 for lfq")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"quantizer.ema_decay must be in (0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        return {**asdict(self), "fsq_levels": list(self.fsq_levels)}


def _from_dict(cls, d: dict | object, key: str):
    if isinstance(d, cls):
        return d
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {key} keys {unknown}; known: {sorted(known)}")
    return cls(**d)


def build_quantizer(q: QuantizerConfig, dim: int) -> nn.Module:
    """The vector-quantize-pytorch module for ``q`` on ``dim``-channel feature maps (B, dim, h, w)."""
    from vector_quantize_pytorch import FSQ, LFQ, VectorQuantize

    if q.kind == "vq":
        return VectorQuantize(dim=dim, codebook_size=q.codebook_size,
                              codebook_dim=q.code_dim if q.code_dim not in (None, dim) else None,
                              decay=q.ema_decay, kmeans_init=q.kmeans_init,
                              threshold_ema_dead_code=q.dead_code_threshold, use_cosine_sim=q.cosine,
                              commitment_weight=q.commitment_weight, accept_image_fmap=True,
                              ema_update=q.ema_update, learnable_codebook=not q.ema_update)
    if q.kind == "fsq":
        return FSQ(levels=list(q.fsq_levels), dim=dim, channel_first=True)
    return LFQ(dim=dim, codebook_size=q.codebook_size, entropy_loss_weight=q.entropy_weight,
               commitment_loss_weight=q.commitment_weight, channel_first=True)


class AutoencoderOutput(NamedTuple):
    recon: torch.Tensor       # (B, 3, H, W) decoder output, nominally [0, 1], unclamped (losses see it raw)
    ids: torch.Tensor         # (B, h, w) int64
    quantizer_loss: torch.Tensor  # scalar: commitment (+ codebook) or entropy loss, already weighted


class VQAutoencoder(nn.Module):
    """Encoder -> quantizer -> decoder, implementing the Tokenizer protocol (base.py)."""

    kind = "vq-autoencoder"

    def __init__(self, cfg: AutoencoderConfig | dict | None = None, quantizer: QuantizerConfig | dict | None = None):
        super().__init__()
        self.cfg = _from_dict(AutoencoderConfig, cfg or {}, "autoencoder")
        self.qcfg = _from_dict(QuantizerConfig, quantizer or {}, "quantizer")
        arch = self.cfg.vqgan_config(self.qcfg.codebook_size)
        self.encoder = Encoder(arch, self.cfg.attention)    # names as the official VQGAN: its weights load
        self.decoder = Decoder(arch, self.cfg.attention)
        self.quantizer = build_quantizer(self.qcfg, self.cfg.z_channels)
        self.weights_sha256: str | None = None  # set by from_config (hash of the weights, not of the file)

    # -- training forward -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> AutoencoderOutput:
        """images (B, 3, H, W) in [0, 1] -> reconstruction, ids, quantizer loss (with gradients)."""
        z = self.encoder(images)                                   # (B, C, h, w)
        z_q, ids, q_loss = self.quantize(z)
        return AutoencoderOutput(self.decoder(z_q), ids, q_loss)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, C, h, w) -> (z_q (B, C, h, w), ids (B, h, w), loss). Distances, normalisations and the EMA
        run in fp32 under bf16 autocast (bf16 distances pick wrong codes and overflow the EMA)."""
        with torch.autocast(z.device.type, enabled=False):
            out = self.quantizer(z.float())
        z_q, ids = out[0], out[1]
        loss = out[2] if len(out) > 2 else z.new_zeros((), dtype=torch.float32)  # FSQ has no auxiliary loss
        return z_q, ids.long(), loss.float().sum()

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> z_q (B, C, h, w), fp32."""
        ids = ids.to(self.decoder.conv_in.weight.device, torch.long)
        with torch.autocast(ids.device.type, enabled=False):
            if self.qcfg.kind == "vq":
                # not the library's get_output_from_indices: with image feature maps (1.32) it moves channels
                # first *before* its output projection, which then mixes the width axis (a test pins ours)
                codes = self.quantizer.codebook[ids]                            # (B, h, w, D)
                return self.quantizer.project_out(codes).permute(0, 3, 1, 2).float()  # (B, C, h, w)
            return self.quantizer.indices_to_codes(ids).float()

    def decode_unclamped(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(ids.device.type, enabled=False):
            return self.decoder(self.codes(ids))

    # -- Tokenizer protocol -------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.qcfg.codebook_size

    @property
    def downsample(self) -> int:
        return self.cfg.downsample

    @property
    def token_shape(self) -> tuple[int, int]:
        return (self.cfg.grid, self.cfg.grid)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float images in [0, 1], (B, 3, H, W) -> int64 ids (B, H/f, W/f)."""
        check_images(images, self.downsample)
        p = self.decoder.conv_in.weight
        return self.quantize(self.encoder(images.to(p.device, p.dtype)))[1]

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """int ids (B, h, w) -> fp32 images in [0, 1], (B, 3, h*f, w*f)."""
        check_ids(ids, self.codebook_size)
        return self.decode_unclamped(ids).float().clamp(0, 1)

    def identity(self) -> dict:
        return {"kind": self.kind, "config": self.cfg.to_dict(), "quantizer": self.qcfg.to_dict(),
                "weights_sha256": self.weights_sha256 or state_dict_sha256(self.state_dict())}

    # -- files ----------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str) -> "VQAutoencoder":
        """The registry constructor: a checkpoint written by ``enat fit`` on a tokenizer config (it records
        the architecture, so ``path`` is all it takes). Eval mode."""
        from .base import TRAINED_KEY

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer checkpoint {path} not found (train one: enat fit -c "
                                    f"experiments/tokenizers/mnist.yaml)")
        from enat_lightning.sampling.checkpoint import read_torch_file

        ckpt = read_torch_file(path, what="tokenizer checkpoint", make_hint="train one: enat fit -c experiments/tokenizers/mnist.yaml")
        record = ckpt.get(TRAINED_KEY) if isinstance(ckpt, dict) else None
        if not isinstance(record, dict):
            raise ValueError(f"{path} is not a tokenizer checkpoint of `enat fit` (no '{TRAINED_KEY}' entry)")
        model = cls(record["autoencoder"], record["quantizer"])
        prefix = record.get("prefix", "autoencoder.")
        state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        model.load_state_dict(state)
        model.weights_sha256 = state_dict_sha256(model.state_dict())
        return model.eval()


def save_tokenizer(model: VQAutoencoder, path: str | Path) -> Path:
    """A weights-only tokenizer file (the record + the autoencoder's weights, no optimizer state): what
    ``VQAutoencoder.from_config`` / ``load_tokenizer(PATH)`` read, a fraction of a training checkpoint."""
    import io

    from enat_lightning.fileio import atomic_write_bytes

    from .base import TRAINED_KEY

    buf = io.BytesIO()
    torch.save({TRAINED_KEY: {"class_path": CLASS_PATH,
                              "autoencoder": model.cfg.to_dict(), "quantizer": model.qcfg.to_dict(),
                              "prefix": "autoencoder."},
                "state_dict": {f"autoencoder.{k}": v.detach().cpu() for k, v in model.state_dict().items()}}, buf)
    return atomic_write_bytes(Path(path), buf.getvalue())


def state_dict_sha256(state: dict) -> str:
    """sha256 over the tensors in key order: the same weights give the same identity whatever file (last,
    best, an export) holds them."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()
