"""The MaskGIT VQGAN tokenizer used by ENAT / MAGE (``vqgan_jax_strongaug.ckpt``), re-implemented.

This is MaskGIT's JAX VQGAN ported to PyTorch, *not* the stock taming VQGAN (semantics: fixtures
README §2): convolutions only (no attention blocks), 2x2 average pooling down, nearest x2 up, no
``quant_conv``/``post_quant_conv`` (so embed_dim == z_channels), bias-free residual convs, and the
1x1 ``nin_shortcut`` is applied to the residual branch ``h`` rather than to the input.

Module names equal the official state_dict keys, so official weights load without renaming.

Shape letters: B batch, H/W image side, h/w latent side (= H/f, W/f with f = ``downsample``),
C z_channels (= embed_dim), V codebook size (n_embed).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enat_lightning.fileio import sha256_file

OFFICIAL_FILE = "vqgan_jax_strongaug.ckpt"
_WHERE_FROM = (f"the official MaskGIT VQGAN weights are the file `assets/{OFFICIAL_FILE}` of the MAGE "
               "release (github.com/LTH14/mage), also used by the ENAT release (github.com/LeapLabTHU/ENAT); "
               "download it yourself and pass its local path (nothing is downloaded at run time)")
# ddconfig keys of the official `vq-f16-jax.yaml`; `attn_resolutions` is accepted and ignored there too.
_DDCONFIG_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                  "num_res_blocks", "attn_resolutions", "dropout")
_IGNORED_PREFIXES = ("loss.",)  # discriminator / perceptual-loss weights stored next to the model


@dataclass(frozen=True)
class VQGANConfig:
    """The official ``ddconfig`` fields plus ``n_embed`` / ``embed_dim``.

    ``attn_resolutions`` is kept only so official configs round-trip: the MaskGIT VQGAN has no
    attention blocks. ``resolution`` is the training size; any H, W divisible by ``downsample`` work.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    n_embed: int = 1024
    embed_dim: int = 256
    double_z: bool = False
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if self.embed_dim != self.z_channels:
            raise ValueError(f"embed_dim ({self.embed_dim}) must equal z_channels ({self.z_channels}): the MaskGIT "
                             "VQGAN has no quant_conv/post_quant_conv to map between them")
        if self.double_z:
            raise ValueError("double_z=True is not supported: the MaskGIT VQGAN encoder outputs z_channels, not 2x")
        if self.dropout != 0.0:
            raise ValueError(f"dropout must be 0.0 (the official VQGAN uses none), got {self.dropout}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult must be a non-empty list of positive ints, got {list(self.ch_mult)}")
        for name in ("ch", "num_res_blocks", "z_channels", "in_channels", "out_ch", "n_embed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for width in {self.ch * m for m in self.ch_mult}:
            if width % 32:
                raise ValueError(f"every width ch*ch_mult must be divisible by 32 (GroupNorm groups), got {width}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        """YAML/JSON types only (lists, not tuples)."""
        d = asdict(self)
        return {**d, "ch_mult": list(self.ch_mult), "attn_resolutions": list(self.attn_resolutions)}

    @classmethod
    def from_dict(cls, d: dict) -> "VQGANConfig":
        """From ``to_dict()`` output, or the official ``{'ddconfig': {...}, 'n_embed', 'embed_dim'}`` layout."""
        d = dict(d)
        if "ddconfig" in d:
            dd = d.pop("ddconfig")
            unknown_top = sorted(set(d) - {"n_embed", "embed_dim"})
            if unknown_top:
                raise ValueError(f"unknown VQGAN config keys {unknown_top} beside 'ddconfig'")
            return config_from_official(dd, d.get("n_embed", 1024), d.get("embed_dim", dd.get("z_channels", 256)))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VQGAN config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, VQGANConfig] = {
    # `vq-f16-jax.yaml`: the tokenizer of MaskGIT / MAGE / ENAT at 256 px (16x16 tokens, 1024 codes).
    "maskgit-f16": VQGANConfig(),
    # Same architecture with narrower widths: the shape of the official_vqgan_tiny.pt fixture.
    "tiny": VQGANConfig(ch=32, z_channels=32, embed_dim=32, resolution=64),
}


def config_from_official(ddconfig: dict, n_embed: int, embed_dim: int) -> VQGANConfig:
    """VQGANConfig from the official constructor arguments ``VQModel(ddconfig, lossconfig, n_embed, embed_dim)``."""
    unknown = sorted(set(ddconfig) - set(_DDCONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown ddconfig keys {unknown}; expected a subset of {list(_DDCONFIG_KEYS)}")
    missing = [k for k in ("ch", "ch_mult", "num_res_blocks", "z_channels") if k not in ddconfig]
    if missing:
        raise ValueError(f"ddconfig lacks {missing}")
    return VQGANConfig(**ddconfig, n_embed=int(n_embed), embed_dim=int(embed_dim))


# ----------------------------------------------------------------------------------------- layers


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GN-swish-conv twice, bias-free convs; identity skip, or nin_shortcut(h) + h when widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        # REPRO: MaskGIT's JAX block projects the *residual branch* h (out->out), and the input x is
        # dropped when the width changes; taming's block would project x (in->out) instead.
        self.nin_shortcut = nn.Conv2d(c_out, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            return self.nin_shortcut(h) + h
        return x + h


class _Level(nn.Module):
    """One resolution level: ``block`` (num_res_blocks ResnetBlocks) and, in the decoder, ``upsample``."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(c_in if j == 0 else c_out, c_out) for j in range(n_blocks))
        self.upsample = _Upsample(c_out) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        return x if self.upsample is None else self.upsample(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions with a residual (taming's ``attn_1``). The
    MaskGIT VQGAN has none; trainable autoencoders (tokenizers/autoencoder.py) may switch it on."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # (B, hw, C) each
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]        # (B, hw, C)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class _Mid(nn.Module):
    def __init__(self, channels: int, attention: bool = False):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels) if attention else None  # absent (no keys) in the official layout
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_1(x)
        return self.block_2(x if self.attn_1 is None else self.attn_1(x))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig, attention: bool = False):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList(_Level(([cfg.ch] + widths)[i], widths[i], cfg.num_res_blocks)
                                  for i in range(len(widths)))
        self.mid = _Mid(widths[-1], attention)
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                   # (B, ch, H, W)
        for i, level in enumerate(self.down):
            h = level(h)
            if i != len(self.down) - 1:
                h = F.avg_pool2d(h, 2)                        # no strided conv in MaskGIT's encoder
        h = self.mid(h)                                       # (B, ch*ch_mult[-1], h, w)
        return self.conv_out(F.silu(self.norm_out(h)))        # (B, C, h, w)


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig, attention: bool = False):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = _Mid(widths[-1], attention)
        # `up[i]` is level i (as `down[i]`), run deepest first; its input is the next deeper level's width.
        # REPRO: num_res_blocks blocks per level, not num_res_blocks + 1 as in taming.
        self.up = nn.ModuleList(_Level((widths + [widths[-1]])[i + 1], widths[i], cfg.num_res_blocks,
                                       upsample=i != 0) for i in range(len(widths)))
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))                         # (B, ch*ch_mult[-1], h, w)
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))        # (B, out_ch, H, W)


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser; ``embedding.weight`` is (V, C). Calling it maps z_e -> (z_q, ids)."""

    def __init__(self, n_embed: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, dim)

    @torch.no_grad()
    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_e (B, C, h, w) -> (z_q (B, C, h, w), ids (B, h, w) int64)."""
        b, c, h, w = z_e.shape
        z = z_e.permute(0, 2, 3, 1).reshape(-1, c)                    # (B*h*w, C)
        e = self.embedding.weight                                     # (V, C)
        # Expanded form |z|^2 + |e|^2 - 2 z.e, as the official quantiser computes it, so that the
        # argmin rounds (and breaks near-ties) the same way; ties go to the lowest index.
        d = z.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * z @ e.t()   # (B*h*w, V)
        ids = d.argmin(dim=1).reshape(b, h, w)                        # (B, h, w)
        return self.lookup(ids), ids

    @torch.no_grad()
    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> codebook vectors z_q (B, C, h, w)."""
        n = self.embedding.num_embeddings
        if ids.dim() != 3 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor (B, h, w), got {ids.dtype} {tuple(ids.shape)}")
        ids = ids.to(self.embedding.weight.device, torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"token ids must lie in [0, {n}), got range [{int(ids.min())}, {int(ids.max())}]")
        return self.embedding(ids).permute(0, 3, 1, 2)                # (B, C, h, w)


# ------------------------------------------------------------------------------------------ model


class VQGAN(nn.Module):
    """MaskGIT VQGAN implementing the ``Tokenizer`` protocol.

    Images are float in [0, 1] (pixel/255, no mean/std normalisation, as the official pipeline feeds
    them). Inputs are moved to the model's device; outputs stay there. There is no dropout or batch
    norm, so train/eval mode gives the same outputs.
    """

    def __init__(self, cfg: VQGANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PRESETS["maskgit-f16"]
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)  # name = official key prefix
        self.weights_sha256: str | None = None  # of the file the weights came from, set by from_checkpoint

    # -- Tokenizer protocol ---------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.cfg.n_embed

    @property
    def downsample(self) -> int:
        return self.cfg.downsample

    @property
    def token_shape(self) -> tuple[int, int]:
        """The id grid at the training resolution (any H, W divisible by ``downsample`` work)."""
        return (self.cfg.resolution // self.downsample,) * 2

    @classmethod
    def from_config(cls, path: str, config: dict | str | None = None, trust_pickle: bool = False) -> "VQGAN":
        """The registry constructor (``init_args``): the official-layout weights file ``path``; ``config``
        a preset name, VQGANConfig fields or the official ddconfig layout (default ``maskgit-f16``)."""
        return cls.from_checkpoint(path, config, trust_pickle=trust_pickle)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float images in [0, 1], (B, 3, H, W) -> int64 ids (B, H/f, W/f)."""
        return self.quantize(self.encode_latent(images))[1]

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """int ids (B, h, w) -> fp32 images in [0, 1], (B, 3, h*f, w*f) (decoded in fp32 under autocast too)."""
        return self.decode_unclamped(ids).clamp(0, 1)

    @torch.no_grad()
    def decode_unclamped(self, ids: torch.Tensor) -> torch.Tensor:
        """The official decode: ids (B, h, w) -> fp32 decoder output (B, 3, H, W), not clamped."""
        device = self.quantize.embedding.weight.device
        with torch.autocast(device.type, enabled=False):
            return self.decoder(self.quantize.lookup(ids).float())

    def identity(self) -> dict:
        """What produced the tokens: kind, config and the sha256 of the weights file (None if not from a file)."""
        return {"kind": "vqgan", "config": self.cfg.to_dict(), "weights_sha256": self.weights_sha256}

    # -- the pieces, exposed for parity tests and latent-space tools -----------------------------
    # `self.quantize(z_e)` -> (z_q, ids) and `self.quantize.lookup(ids)` -> z_q complete the set.
    @torch.no_grad()
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> encoder output z_e (B, C, h, w)."""
        images = self._check_images(images)
        return self.encoder(images)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        f, c = self.downsample, self.cfg.in_channels
        if images.dim() != 4 or images.shape[1] != c or images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"images must be (B, {c}, H, W) with H and W multiples of {f}, "
                             f"got shape {tuple(images.shape)}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be float in [0, 1] (pixel/255), got dtype {images.dtype}")
        p = self.quantize.embedding.weight
        return images.to(p.device, p.dtype)

    # -- construction from official weights -----------------------------------------------------
    @classmethod
    def from_official(cls, ddconfig: dict, n_embed: int, embed_dim: int, state_dict: dict) -> "VQGAN":
        """A VQGAN in eval mode from the official constructor arguments and official-named weights
        (float16 weights are cast to float32)."""
        model = cls(config_from_official(ddconfig, n_embed, embed_dim))
        return load_official_weights(model, state_dict).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: VQGANConfig | dict | str | None = None,
                        trust_pickle: bool = False) -> "VQGAN":
        """Loads ``vqgan_jax_strongaug.ckpt`` (or any file holding official-named weights, bare or under
        ``'state_dict'``) from a local path. ``config``: a VQGANConfig, a dict (``to_dict()`` or official
        layout), a preset name, or None for the official ``maskgit-f16``. ``trust_pickle`` allows a full
        unpickle for files that hold more than tensors (only for files you trust)."""
        cfg = resolve_config(config)
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VQGAN checkpoint {path} not found; {_WHERE_FROM}")
        state_dict = read_state_dict(path, trust_pickle=trust_pickle)
        model = load_official_weights(cls(cfg), state_dict, source=str(path)).eval()
        model.weights_sha256 = sha256_file(path)
        return model


def resolve_config(config: VQGANConfig | dict | str | None) -> VQGANConfig:
    if config is None:
        return PRESETS["maskgit-f16"]
    if isinstance(config, VQGANConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown VQGAN preset {config!r}; choose from {sorted(PRESETS)}")
        return PRESETS[config]
    if isinstance(config, dict):
        return VQGANConfig.from_dict(config)
    raise TypeError(f"VQGAN config must be a VQGANConfig, dict, preset name or None, got {type(config).__name__}")


def read_state_dict(path: Path, trust_pickle: bool = False) -> dict:
    """The weights in ``path``: the dict itself, or its ``'state_dict'`` entry; ``loss.*`` keys dropped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file; report them all the same way
        hint = ("; it holds Python objects beyond tensors: if you trust the file, load it with "
                "trust_pickle=True" if "weights_only" in str(err) else "")
        raise ValueError(f"cannot read VQGAN checkpoint {path} as a torch file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}){hint}") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"VQGAN checkpoint {path} holds no state dict (expected a dict of tensors, bare or under "
                         f"'state_dict'); {_WHERE_FROM}")
    return {k: v for k, v in obj.items() if not k.startswith(_IGNORED_PREFIXES)}


def load_official_weights(model: VQGAN, state_dict: dict, source: str = "state_dict") -> VQGAN:
    """Copies official-named weights into ``model``; any mismatch is one ValueError naming the keys."""
    own = model.state_dict()
    given = {k: v for k, v in state_dict.items() if not k.startswith(_IGNORED_PREFIXES)}
    # model order (encoder first, input side first) so the first listed problem is the earliest layer
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    wrong = [f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in given and given[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def show(items: list) -> str:
            return f"{items[:10]}{f' ... ({len(items)} in all)' if len(items) > 10 else ''}"
        raise ValueError(f"{source} does not fit the VQGAN config {model.cfg.to_dict()}:\n"
                         f"  missing keys: {show(missing)}\n  unexpected keys: {show(unexpected)}\n"
                         f"  shape mismatches: {show(wrong)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()})
    return model
