"""A diffusers ``VQModel`` (the aMUSEd / open-MUSE VQ-GAN and the LDM VQ autoencoders) as a tokenizer.

This wraps the ``diffusers`` library -- it is not a port: the network, its weights and its quantiser are
diffusers' own, called exactly as aMUSEd's pipelines call them (``AmusedImg2ImgPipeline`` encodes with
``quantize(encode(x).latents)[2][2]``; ``AmusedPipeline`` decodes with
``decode(ids, force_not_quantize=True, shape=(B, h, w, C))``). A ``vqvae/`` folder (``config.json`` +
``diffusion_pytorch_model.safetensors``), or the pipeline folder that holds it, loads as it is, offline.

``diffusers`` is an optional extra (``pip install -e ".[diffusers]"``); it is imported only when a
``DiffusersVQ`` is built. Pixel range: aMUSEd's VQ reads and writes [0, 1] (its pipelines use
``VaeImageProcessor(do_normalize=False)``); the LDM VQ autoencoders use [-1, 1] -- ``pixel_range`` says which.

Shape letters: B batch, H/W image side, h/w latent side (H/f, W/f), C latent channels (vq_embed_dim).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from enat_lightning.errors import UserError

from .base import check_ids, check_images, to_unit_range

EXTRA = "diffusers"
PIXEL_RANGES = ("0,1", "-1,1")
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def import_vqmodel():
    """diffusers' ``VQModel`` class, or one line naming the extra that provides it."""
    try:
        from diffusers import VQModel
    except ImportError as err:
        raise UserError(f"the diffusers VQ tokenizer needs the optional extra [{EXTRA}]: "
                        f"pip install -e '.[{EXTRA}]' ({err})") from err
    return VQModel


def find_vqvae_folder(path: str | Path) -> Path:
    """``path`` itself when it holds ``config.json``, else its ``vqvae/`` subfolder (a pipeline folder)."""
    path = Path(path)
    for folder in (path, path / "vqvae"):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"diffusers VQ folder {path} has no config.json (nor vqvae/config.json) "
                            "(tokenizer init_args.path); pass the local `vqvae/` folder of e.g. amused/amused-256 "
                            "-- nothing is downloaded at run time")


class DiffusersVQ(nn.Module):
    """A diffusers ``VQModel`` behind the tokenizer interface: encode [0, 1] -> ids (B, h, w), decode back."""

    def __init__(self, path: str | Path, pixel_range: str = "0,1", image_size: int = 256):
        super().__init__()
        self.image_size = int(image_size)  # the resolution token_shape reports (aMUSEd-256: 256 -> 16x16)
        if pixel_range not in PIXEL_RANGES:
            raise UserError(f"pixel_range must be one of {list(PIXEL_RANGES)} (tokenizer init_args.pixel_range), "
                            f"got {pixel_range!r}")
        VQModel = import_vqmodel()
        self.folder = find_vqvae_folder(path)
        self.pixel_range = pixel_range
        # fp32 always: decode runs in fp32 by the tokenizer contract, and the quantiser's distances need it
        self.vqvae = VQModel.from_pretrained(str(self.folder), local_files_only=True, torch_dtype=torch.float32)
        self.vqvae.eval().requires_grad_(False)
        self.eval()

    # -- the tokenizer interface ------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return int(self.vqvae.config.num_vq_embeddings)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vqvae.config.block_out_channels) - 1)

    @property
    def token_shape(self) -> tuple[int, int]:
        return (self.image_size // self.downsample,) * 2

    @classmethod
    def from_config(cls, path: str, pixel_range: str = "0,1", image_size: int = 256) -> "DiffusersVQ":
        """The registry constructor (``init_args``): a local ``vqvae/`` folder or the pipeline folder holding it."""
        return cls(path, pixel_range=pixel_range, image_size=image_size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> ids (B, H/f, W/f), int64."""
        check_images(images, self.downsample)
        x = images.float() if self.pixel_range == "0,1" else images.float() * 2 - 1
        latents = self.vqvae.encode(x).latents  # (B, C, h, w)
        b, _, h, w = latents.shape
        return self.vqvae.quantize(latents)[2][2].reshape(b, h, w).long()

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> images (B, 3, h*f, w*f) in [0, 1], decoded in fp32 (clamped, as aMUSEd does)."""
        check_ids(ids, self.codebook_size)
        b, h, w = ids.shape
        shape = (b, h, w, self.vqvae.config.vq_embed_dim or self.vqvae.config.latent_channels)
        with torch.autocast(self.vqvae.device.type, enabled=False):
            if self.vqvae.config.lookup_from_codebook:  # aMUSEd: decode() looks the ids up itself
                out = self.vqvae.decode(ids.long(), force_not_quantize=True, shape=shape).sample
            else:  # LDM VQs: look the codes up, then decode them as already-quantised latents
                codes = self.vqvae.quantize.get_codebook_entry(ids.long().flatten(), shape)  # (B, C, h, w)
                out = self.vqvae.decode(codes, force_not_quantize=True).sample
        return to_unit_range(out if self.pixel_range == "0,1" else (out.float() + 1) / 2)

    def identity(self) -> dict:
        from enat_lightning.fileio import sha256_file

        weights = next((self.folder / n for n in _WEIGHT_FILES if (self.folder / n).is_file()), None)
        config = {k: v for k, v in dict(self.vqvae.config).items() if not k.startswith("_")}
        return {"kind": "diffusers-vq", "config": json.loads(json.dumps(config, default=list)),
                "pixel_range": self.pixel_range, "weights_sha256": sha256_file(weights) if weights else None}
