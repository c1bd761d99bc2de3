"""What ``enat app`` does, as plain functions (no Gradio): tests call them without a browser.

A ``Session`` holds the loaded network, its tokenizer and the app's output folder. ``generate_grid``
and ``edit_region`` run exactly what ``enat sample`` (resp. ``enat sample --edit``) runs -- sample i
draws from ``seeding.sample_seed(seed, i)`` (``sampling.runner.sample_chunk``), the grid is laid out
by the same ``make_grid`` -- so the image the page shows equals the one the printed command writes.
``sample_command`` / ``edit_command`` print that command. Every file the app writes (uploaded edit
inputs) goes under ``Session.out_dir``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from enat_lightning.errors import UserError
from enat_lightning.sampling.settings import SamplerSettings

DEMO_CHECKPOINT = Path("runs/demo/train/checkpoints/last.ckpt")  # what `make demo` trains
MAX_IMAGES = 64  # one grid per click: keeps a CPU page responsive


def error_line(e: BaseException) -> str:
    """The line the CLI prints for a user error (``enat_lightning.cli._guarded``)."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return f"enat: error: {' '.join(str(msg).split())}"


def default_checkpoint(root: Path = Path(".")) -> Path:
    """The demo checkpoint if `make demo` has run here, else a one-line error saying how to make one."""
    path = Path(root) / DEMO_CHECKPOINT
    if not path.is_file():
        raise UserError(f"no --ckpt given and no demo checkpoint at {path}: run `make demo` (CPU, minutes) or give "
                        f"--ckpt CKPT_OR_EXPORT_DIR")
    return path


@dataclass
class Session:
    """The model the app shows and where it may write."""

    model: torch.nn.Module
    tokenizer: object
    ckpt: str  # as the user gave it (for the printed commands)
    tokenizer_spec: str
    preset: SamplerSettings  # the checkpoint's sampler preset: the form's initial values
    preset_source: str
    out_dir: Path
    text_encoder: str | None = None
    encoder: object = None

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def is_text(self) -> bool:
        return getattr(self.cfg, "condition", "class") == "text"


def open_session(ckpt: Path | None, tokenizer: str | None, out_dir: Path, *, device: str = "cpu",
                 text_encoder: str | None = None, trust_checkpoint: bool = False) -> Session:
    """Loads the network (a .ckpt or an export folder) and its tokenizer: the export's bundled one,
    ``tokenizer``, or the demo tokenizer for the demo checkpoint."""
    from enat_lightning.commands.export import choose_sampler
    from enat_lightning.models.pretrained import is_export_dir
    from enat_lightning.sampling.checkpoint import load_generator
    from enat_lightning.sampling.settings import as_settings
    from enat_lightning.tokenizers import check_codebook_size, load_tokenizer, spec_text
    from enat_lightning.tokenizers.exported import has_tokenizer_weights

    demo = ckpt is None
    ckpt = default_checkpoint() if demo else Path(ckpt)
    model, cfg = load_generator(ckpt, device=device, trust=trust_checkpoint)
    if tokenizer is None:
        if Path(ckpt).is_dir() and has_tokenizer_weights(ckpt):
            tokenizer = str(ckpt)
        elif demo:
            tokenizer = "demo"
        else:
            raise UserError(f"--tokenizer is needed to show images of {ckpt} (the tokenizer its training shards were "
                            f"made with: 'demo', a VQGAN checkpoint, or an export folder made with --with_tokenizer)")
    tok = load_tokenizer(tokenizer)
    check_codebook_size(tok, cfg.codebook_size, f"the generator {ckpt}", f"--tokenizer {spec_text(tokenizer)}")
    if hasattr(tok, "to"):
        tok = tok.to(device)
    if is_export_dir(ckpt) and (Path(ckpt) / "sampler.yaml").is_file():
        import yaml

        preset = as_settings((yaml.safe_load((Path(ckpt) / "sampler.yaml").read_text()) or {}).get("sampler"))
        source = f"{ckpt}/sampler.yaml"
    else:
        preset, source = choose_sampler(None, [], Path(ckpt))
    encoder = None
    if getattr(cfg, "condition", "class") == "text":
        from enat_lightning.commands.common import prompt_encoder

        encoder = prompt_encoder(text_encoder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Session(model, tok, str(ckpt), str(tokenizer), preset, source, out_dir, text_encoder, encoder)


# -- the form ----------------------------------------------------------------------------------------------
def settings_from_form(base: SamplerSettings, **fields) -> SamplerSettings:
    """``base`` with the form's fields; text fields (``guidance_interval`` 'FIRST,LAST', ``uncond_skip_steps``
    '1,2') are parsed here. Bad values raise the SamplerSettings error the CLI prints."""
    values = {}
    for name, v in fields.items():
        if name in ("guidance_interval", "uncond_skip_steps") and isinstance(v, str):
            parts = [p for p in v.replace(" ", "").split(",") if p]
            try:
                v = tuple(int(p) for p in parts)
            except ValueError:
                raise ValueError(f"SamplerSettings.{name} must be integers separated by commas, got {v!r}") from None
            v = (v or None) if name == "guidance_interval" else v
        elif name in ("steps",) and isinstance(v, float) and v.is_integer():
            v = int(v)
        elif name in ("cfg_scale", "mask_temp", "samp_temp", "guidance_power") and isinstance(v, int):
            v = float(v)
        values[name] = v
    return dataclasses.replace(base, **values)


def parse_labels(text: str, num_classes: int, per_class: int = 1) -> list[int]:
    """'1,2,3' (class ids) -> the label list ``enat sample --labels 1,2,3 --per_class N`` samples."""
    from enat_lightning.sampling.runner import class_labels

    try:
        labels = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise ValueError(f"--labels must be class ids separated by commas, e.g. 1,2,3; got {text!r}") from None
    if not labels:
        raise ValueError("--labels: give at least one class id, e.g. 1,2,3")
    wanted = class_labels(num_classes, labels, int(per_class))
    if len(wanted) > MAX_IMAGES:
        raise ValueError(f"{len(wanted)} images per click is too many for the app (at most {MAX_IMAGES}); use "
                         f"`enat sample` for large runs")
    return wanted


# -- generating ----------------------------------------------------------------------------------------------
@dataclass
class GridResult:
    grid: np.ndarray  # (H', W', 3) uint8, the layout of `enat sample`'s grid.png
    images: np.ndarray  # (N, H, W, 3) uint8, = samples.npz arr_0
    labels: list[int]
    gflops: float  # per image, the paper's convention (`enat flops` gmacs_total)
    gflops_run: float  # per image, what our sampler executed (gmacs_actual)
    seconds: float
    command: str

    def summary(self) -> str:
        return (f"{len(self.labels)} images in {self.seconds:.2f} s ({1000 * self.seconds / len(self.labels):.1f} "
                f"ms/image) · {self.gflops:.4g} GFLOPs/image (paper convention; {self.gflops_run:.4g} executed)")


def cost(session: Session, settings: SamplerSettings) -> tuple[float, float]:
    """(GFLOPs per image in the paper's convention, GFLOPs per image our sampler runs)."""
    from enat_lightning.evaluation.flops import count_generation

    rep = count_generation(session.cfg, settings)
    return rep.gmacs_total, rep.gmacs_actual


def generate_grid(session: Session, labels: str | list[int], settings: SamplerSettings, seed: int,
                  per_class: int = 1, captions: str | None = None) -> GridResult:
    """The images ``enat sample --labels ... --seed SEED`` makes, and its grid; text models sample one
    caption per line of ``captions``."""
    from enat_lightning.sampling import io as sio
    from enat_lightning.sampling.runner import sample_chunk

    seed = int(seed)
    condition = None
    if session.is_text:
        from enat_lightning.text import encode_prompts

        lines = [ln.strip() for ln in (captions or "").splitlines() if ln.strip()]
        if not lines:
            raise UserError("this is a text model: write one caption per line")
        wanted = [i for i in range(len(lines)) for _ in range(int(per_class))]
        condition = encode_prompts(lines, session.encoder, session.cfg)[torch.tensor(wanted)]
    else:
        wanted = labels if isinstance(labels, list) else parse_labels(labels, session.cfg.num_classes, per_class)
    t0 = time.perf_counter()
    out = sample_chunk(session.model, session.tokenizer, torch.tensor(wanted), 0, settings, seed, condition=condition)
    seconds = time.perf_counter() - t0
    images = out["images"].numpy()  # (N, H, W, 3) uint8
    pick = np.linspace(0, len(images) - 1, min(MAX_IMAGES, len(images))).round().astype(int)
    grid = sio.make_grid(images[sorted(set(pick.tolist()))])  # as `assemble` lays out grid.png
    gflops, run = cost(session, settings)
    cmd = sample_command(session, wanted if not session.is_text else None, settings, seed, per_class,
                         captions=captions)
    return GridResult(grid, images, wanted, gflops, run, seconds, cmd)


def _sampler_flags(settings: SamplerSettings) -> list[str]:
    """``--sampler.FIELD VALUE`` for every field that differs from the defaults (the CLI's own syntax)."""
    default = SamplerSettings().to_dict()
    flags = []
    for k, v in settings.to_dict().items():
        if v == default[k]:
            continue
        text = "null" if v is None else str(v).lower() if isinstance(v, bool) else \
            "[" + ",".join(str(x) for x in v) + "]" if isinstance(v, list) else str(v)
        flags += [f"--sampler.{k}", text]
    return flags


def _compact(labels: list[int], per_class: int) -> tuple[str, int]:
    """labels [1,1,2,2] with per_class 2 -> ('1,2', 2): the shortest --labels / --per_class pair."""
    n = max(1, int(per_class))
    base = labels[::n]
    if [c for c in base for _ in range(n)] == labels:
        return ",".join(map(str, base)), n
    return ",".join(map(str, labels)), 1


def sample_command(session: Session, labels: list[int] | None, settings: SamplerSettings, seed: int,
                   per_class: int = 1, captions: str | None = None, out: str | None = None) -> str:
    """The `enat sample` line that writes the same images (its grid.png = the app's grid)."""
    argv = ["enat", "sample", "--ckpt", session.ckpt]
    if labels is not None:
        text, n = _compact(labels, per_class)
        argv += ["--labels", text] + (["--per_class", str(n)] if n > 1 else [])
    else:
        argv += ["--prompts", str(session.out_dir / "prompts.txt"), "--text_encoder", str(session.text_encoder)]
        if int(per_class) > 1:
            argv += ["--per_class", str(int(per_class))]
        if captions is not None:  # the command reads the captions from a file the app writes (its own folder)
            from enat_lightning.fileio import atomic_write_text

            lines = [ln.strip() for ln in captions.splitlines() if ln.strip()]
            atomic_write_text(session.out_dir / "prompts.txt", "\n".join(lines) + "\n")
    argv += ["--tokenizer", session.tokenizer_spec, "--seed", str(int(seed)), *_sampler_flags(settings),
             "--out", out or str(session.out_dir / f"sample_seed{int(seed)}")]
    return shlex.join(argv)


# -- editing ---------------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    grid: np.ndarray  # (H', W', 3) uint8: input as tokenized | one edit per label (`enat sample --edit`'s PNG)
    input_path: Path  # the input as the app saved it (in its own folder), what the command reads
    region: tuple[int, int, int, int]
    tokens_edited: int
    seconds: float
    command: str

    def summary(self) -> str:
        return (f"{self.tokens_edited} tokens regenerated in region {self.region}, {self.seconds:.2f} s; "
                f"tiles: the input as tokenized | one edit per class")


def image_side(session: Session) -> int:
    """The pixel side the model's token grid decodes to."""
    with torch.no_grad():
        return int(session.tokenizer.decode(torch.zeros(1, session.cfg.grid, session.cfg.grid, dtype=torch.long)).shape[-1])


def prepare_input(session: Session, image: np.ndarray) -> tuple[np.ndarray, Path]:
    """An uploaded / generated image as the model's square RGB input (centre crop + resize when needed),
    saved as PNG under the app's folder (named by content, so the command stays valid)."""
    from PIL import Image

    from enat_lightning.sampling import io as sio

    if image is None:
        raise UserError("upload an image to edit (or press 'use the first generated image')")
    img = Image.fromarray(np.asarray(image).astype(np.uint8)).convert("RGB")
    side = image_side(session)
    if img.size != (side, side):
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((side, side), Image.LANCZOS)
    pixels = np.asarray(img)
    name = hashlib.sha1(pixels.tobytes()).hexdigest()[:12]
    path = sio.save_png(session.out_dir / "inputs" / f"edit_{name}.png", pixels)
    return pixels, path


def draw_region(image: np.ndarray, region: str) -> np.ndarray:
    """The image with the region's outline drawn in red (a preview of what will be regenerated)."""
    from enat_lightning.sampling.edit import parse_region

    x0, y0, x1, y1 = parse_region(region)
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
    red = np.array([255, 0, 0], np.uint8)
    out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = red
    out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = red
    return out


def edit_region(session: Session, image: np.ndarray, region: str, labels: str, settings: SamplerSettings,
                seed: int) -> EditResult:
    """``enat sample --edit INPUT --region X0,Y0,X1,Y1 --labels ... --seed SEED``, in memory."""
    from enat_lightning.sampling import io as sio
    from enat_lightning.sampling.edit import edit, parse_region

    if session.is_text:
        raise UserError("editing needs a class-conditional model (`enat sample --edit` takes --labels)")
    pixels, path = prepare_input(session, image)
    box = parse_region(region)
    wanted = parse_labels(labels, session.cfg.num_classes)
    device = next(session.model.parameters()).device
    t0 = time.perf_counter()
    res = edit(session.model, session.tokenizer, pixels, box, torch.tensor(wanted, device=device), settings,
               torch.Generator(device=device).manual_seed(int(seed)))
    seconds = time.perf_counter() - t0
    source = sio.to_uint8(session.tokenizer.decode(res.source_ids[None]))  # (1, H, W, 3)
    grid = sio.make_grid(np.concatenate([source, sio.to_uint8(res.images)]), nrow=len(wanted) + 1)
    argv = ["enat", "sample", "--ckpt", session.ckpt, "--tokenizer", session.tokenizer_spec, "--edit", str(path),
            "--region", ",".join(map(str, box)), "--labels", ",".join(map(str, wanted)), "--seed", str(int(seed)),
            *_sampler_flags(settings), "--out", str(session.out_dir / "edits")]
    return EditResult(grid, path, box, int(res.token_mask.sum()), seconds, shlex.join(argv))
