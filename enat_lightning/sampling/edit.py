"""Editing: inpainting, outpainting and class-editing of an image or a token grid (pure torch).

The image is tokenized with the model's tokenizer; the tokens whose pixel footprint meets the
region box are set to [MASK] and generated, every other token stays fixed and visible from the
first step (``generate(..., init_ids=...)``): the schedule counts only the region, reuse works as
usual. Inpainting = a box inside the content; outpainting = a box over padding added around the
content; class-editing = a box over the object, sampled with another label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .iterative import generate
from .settings import SamplerSettings
from enat_lightning.errors import InvalidInput


def parse_region(text: str) -> tuple[int, int, int, int]:
    """'X0,Y0,X1,Y1' -> a pixel box (ints); a clear error otherwise."""
    try:
        box = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise InvalidInput(f"--region must be X0,Y0,X1,Y1 (four integers, pixels), got {text!r}")
    return box  # type: ignore[return-value]


def region_token_mask(region: tuple[int, int, int, int], image_hw: tuple[int, int],
                      grid_hw: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool: True at the tokens whose pixel footprint intersects the box [x0, x1) x [y0, y1).

    ``image_hw`` = (H, W) pixels, ``grid_hw`` = (h, w) tokens; a token covers H/h x W/w pixels.
    """
    x0, y0, x1, y1 = (int(v) for v in region)
    H, W = image_hw
    h, w = grid_hw
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise InvalidInput(f"region {tuple(region)} must satisfy 0 <= X0 < X1 <= {W} and 0 <= Y0 < Y1 <= {H} "
                         f"(pixels of the {W}x{H} input; pad the image first to outpaint)")
    if H % h or W % w:
        raise InvalidInput(f"image {W}x{H} is not a multiple of the {w}x{h} token grid")
    fy, fx = H // h, W // w
    rows = torch.arange(h)
    cols = torch.arange(w)
    in_rows = (rows * fy < y1) & ((rows + 1) * fy > y0)  # (h,)
    in_cols = (cols * fx < x1) & ((cols + 1) * fx > x0)  # (w,)
    return in_rows[:, None] & in_cols[None, :]


def _as_float_image(image) -> torch.Tensor:
    """uint8 (H, W, 3) array / tensor, float (3, H, W) tensor in [0, 1], or a PIL image -> (1, 3, H, W)."""
    if hasattr(image, "convert"):  # PIL
        image = np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image))  # a writable copy
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a uint8 (H, W, 3) array, a float (3, H, W) tensor or a PIL image, "
                        f"got {type(image).__name__}")
    if image.dtype == torch.uint8:
        if image.dim() != 3 or image.shape[-1] != 3:
            raise InvalidInput(f"uint8 image must be (H, W, 3), got {tuple(image.shape)}")
        image = image.permute(2, 0, 1).float() / 255.0
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidInput(f"float image must be (3, H, W), got {tuple(image.shape)}")
    return image.float().unsqueeze(0)


@dataclass
class EditResult:
    ids: torch.Tensor  # (B, h, w) edited token grids
    images: torch.Tensor | None  # (B, 3, H, W) decoded, unclamped (None without a tokenizer)
    token_mask: torch.Tensor  # (h, w) bool: the regenerated tokens
    source_ids: torch.Tensor  # (h, w) tokens of the input


def edit_tokens(model, tokens: torch.Tensor, token_mask: torch.Tensor, condition,
                settings: SamplerSettings | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Regenerates ``token_mask`` (h, w) of the grid ``tokens`` (h, w) once per condition -> (B, h, w).

    Tokens outside the mask are copied unchanged into every output.
    """
    cfg = model.cfg
    tokens = torch.as_tensor(tokens).long()
    token_mask = torch.as_tensor(token_mask).bool()
    if tokens.shape != (cfg.grid, cfg.grid) or token_mask.shape != tokens.shape:
        raise InvalidInput(f"tokens and token_mask must be ({cfg.grid}, {cfg.grid}) for this model, got "
                         f"{tuple(tokens.shape)} and {tuple(token_mask.shape)}")
    if not bool(token_mask.any()):
        raise InvalidInput("the region covers no token: nothing to edit")
    n = len(condition)
    init = torch.where(token_mask, torch.full_like(tokens, cfg.mask_id), tokens).reshape(1, -1).repeat(n, 1)
    return generate(model, condition, settings, generator=generator, init_ids=init)


@torch.no_grad()
def edit(model, tokenizer, image, region: tuple[int, int, int, int], condition,
         settings: SamplerSettings | None = None, generator: torch.Generator | None = None) -> EditResult:
    """Tokenizes ``image``, regenerates the tokens under the pixel box ``region`` (X0, Y0, X1, Y1)
    for each entry of ``condition`` (class labels (B,)), and decodes the results."""
    x = _as_float_image(image)  # (1, 3, H, W)
    device = next(model.parameters()).device
    if hasattr(tokenizer, "to"):
        tokenizer = tokenizer.to(device)
    src = tokenizer.encode(x.to(device))[0].long()  # (h, w)
    if src.shape != (model.cfg.grid, model.cfg.grid):
        raise InvalidInput(f"the {x.shape[3]}x{x.shape[2]} image tokenizes to a {src.shape[1]}x{src.shape[0]} grid, "
                         f"but the model samples {model.cfg.grid}x{model.cfg.grid}: resize the image")
    mask = region_token_mask(region, (x.shape[2], x.shape[3]), tuple(src.shape)).to(device)
    ids = edit_tokens(model, src, mask, condition, settings, generator)
    images = tokenizer.decode(ids) if tokenizer is not None else None
    return EditResult(ids, images, mask, src)
