"""SampleGrid: every N optimizer steps, sample a few images with the EMA network and log a grid.

Sampling is ``enat_lightning.sampling.generate`` (the same sampler as ``enat sample``). With a
tokenizer the token grids are decoded to pixels; without one each token grid is shown as a
heatmap of its ids (ids / (V - 1) in grey), which still shows class structure early in training.
The grid goes to the logger (TensorBoard ``add_image``) and, atomically, to
``<log_dir>/samples/step_<k>.png``.
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from enat_lightning.sampling import io as sio
from enat_lightning.sampling.settings import SamplerSettings, as_settings

KEY = "trainer.callbacks[SampleGrid].init_args.tokenizer"


def tile(images: torch.Tensor, nrow: int, pad: int = 2) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> one (3, H', W') grid in [0, 1], ``nrow`` images per row, white padding
    (``sampling.io.make_grid`` on the uint8 images: one tiler and one uint8 rounding in the package)."""
    grid = sio.make_grid(sio.to_uint8(images), nrow=nrow, pad=pad, fill=255)  # (H', W', 3) uint8
    return torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0


def heatmap(ids: torch.Tensor, codebook_size: int, scale: int = 8) -> torch.Tensor:
    """Token ids (B, h, w) -> grey images (B, 3, h*scale, w*scale) in [0, 1]."""
    x = ids.float().unsqueeze(1) / max(codebook_size - 1, 1)  # (B, 1, h, w)
    return F.interpolate(x, scale_factor=scale, mode="nearest").expand(-1, 3, -1, -1)


def save_png(grid: torch.Tensor, path: Path) -> Path:
    """Writes a (3, H, W) [0, 1] grid as PNG, atomically (sampling.io.save_png)."""
    return sio.save_png(path, sio.to_uint8(grid[None])[0])  # (H, W, 3) uint8


class SampleGrid(pl.Callback):
    """Logs ``num_samples`` EMA samples every ``every_n_steps`` optimizer steps and at the end of fit.

    labels: classes to sample (default: evenly spread over the classes); prompts + text_encoder:
    what a text model (condition: text) samples instead (captions and the shards' encoder spec,
    e.g. 'clip:DIR'); tokenizer: a
    tokenizer spec (``{class_path: ..., init_args: {...}}`` or an alias: 'demo', a checkpoint path) or None for
    heatmaps; sampler: the ``SamplerSettings`` (YAML ``sampler: {cfg_scale: 3.0}``; omitted = the
    official defaults; a NAT ignores ``reuse``). A missing tokenizer file fails when the callback is
    built, before training.
    """

    def __init__(self, every_n_steps: int = 1000, num_samples: int = 16, labels: list[int] | None = None,
                 tokenizer: str | dict | None = None, sampler: SamplerSettings | None = None, seed: int = 0,
                 nrow: int | None = None, use_ema: bool = True, prompts: list[str] | None = None,
                 text_encoder: str | None = None):
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError(f"SampleGrid: every_n_steps and num_samples must be >= 1, got {every_n_steps}, {num_samples}")
        path = (tokenizer.get("init_args") or {}).get("path") if isinstance(tokenizer, dict) else tokenizer
        if path is not None and path != "demo" and not str(path).lstrip().startswith("{") \
                and not Path(str(path).removeprefix("demo:")).is_file():
            raise FileNotFoundError(f"{KEY}: tokenizer file {path} not found (the demo tokenizer: build it with "
                                    f"`enat tokenize demo` or `make demo`; a VQGAN: download its checkpoint)")
        self.every_n_steps, self.num_samples, self.labels = every_n_steps, num_samples, labels
        self.tokenizer_spec, self.tokenizer = tokenizer, None
        self.sampler = as_settings(sampler)
        self.seed, self.nrow, self.use_ema = seed, nrow, use_ema
        if bool(prompts) != bool(text_encoder):
            raise ValueError("SampleGrid: prompts and text_encoder go together (captions for a text model)")
        self.prompts, self.text_encoder = prompts, text_encoder
        self.last_path: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if (pl_module.cfg.condition == "text") != bool(self.prompts):
            raise ValueError("SampleGrid: a text model (condition: text) samples prompts: set init_args.prompts "
                             "and init_args.text_encoder" if self.prompts is None else
                             "SampleGrid: prompts need a text model (condition: text); class models take labels")
        if self.tokenizer_spec is not None and self.tokenizer is None:
            from enat_lightning.tokenizers import check_codebook_size, load_tokenizer

            self.tokenizer = load_tokenizer(self.tokenizer_spec)
            check_codebook_size(self.tokenizer, pl_module.cfg.codebook_size, "model.net.init_args",
                                f"{KEY} ({self.tokenizer.identity().get('kind')})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps:
            return
        self._log_grid(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:  # the final weights, whatever every_n_steps is
            self._log_grid(trainer, pl_module)

    def _log_grid(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if getattr(self, "_done_step", None) == step:
            return  # (with gradient accumulation several batches share one step)
        self._done_step = step
        grid = self.sample_grid(pl_module)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if hasattr(getattr(logger, "experiment", None), "add_image"):
                logger.experiment.add_image("samples", grid, step)
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self.last_path = save_png(grid, log_dir / "samples" / f"step_{step:08d}.png")

    @torch.no_grad()
    def sample_grid(self, pl_module) -> torch.Tensor:
        """(3, H, W) grid in [0, 1] of samples from the EMA (or online) network."""
        from enat_lightning.sampling import generate

        net = pl_module.ema_net if self.use_ema else pl_module.net
        cfg = net.cfg
        if self.prompts:  # text model: the prompts, cycled
            from enat_lightning.text import build_text_encoder, encode_prompts

            captions = encode_prompts(self.prompts, build_text_encoder(self.text_encoder), cfg)
            labels = captions[torch.arange(self.num_samples) % len(captions)]
        else:
            labels = self.labels or [i * cfg.num_classes // self.num_samples for i in range(self.num_samples)]
            labels = torch.tensor(labels[: self.num_samples], dtype=torch.long, device=pl_module.device)
        g = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        ids = generate(net, labels, self.sampler, generator=g)  # (B, side, side)
        if self.tokenizer is not None:
            if hasattr(self.tokenizer, "to"):  # nn.Module tokenizers (VQGAN) follow the model's device
                self.tokenizer.to(ids.device)
            else:
                ids = ids.cpu()
            images = self.tokenizer.decode(ids).clamp(0, 1).float()  # (B, 3, H, W)
        else:
            images = heatmap(ids, cfg.codebook_size)
        nrow = self.nrow or max(1, int(len(labels) ** 0.5))
        return tile(images.cpu(), nrow)
