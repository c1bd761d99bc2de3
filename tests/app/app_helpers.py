"""Shared pieces of the app tests: a tiny random ENAT exported with the tests' digits tokenizer, and running
the `enat sample` line the app prints."""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from enat_lightning.cli import main
from enat_lightning.commands.export import export
from enat_lightning.models import ENAT, ENATConfig
from enat_lightning.sampling.checkpoint import save_generator_checkpoint
from enat_lightning.sampling.settings import SamplerSettings

REPO = Path(__file__).resolve().parents[2]
DIGITS_TOKENIZER = REPO / "data" / "digits" / "tokenizer.npz"  # committed: 16x16 digits, 4x4 tokens, 128 codes
CFG = ENATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=2, enc_depth=1, dec_depth=1)
PRESET = SamplerSettings(steps=3, cfg_scale=1.0, mask_temp=1.0, samp_temp=2.0)


def tiny_export(folder: Path) -> Path:
    """An export folder (weights random, seed 0) with the digits tokenizer bundled and a 3-step preset."""
    torch.manual_seed(0)
    ckpt = save_generator_checkpoint(folder / "tiny.ckpt", CFG, ENAT(CFG).state_dict())
    export(ckpt, folder / "tiny", tokenizer=str(DIGITS_TOKENIZER), with_tokenizer=True, sampler=PRESET)
    return folder / "tiny"


def run_printed_command(command: str, out: Path, capsys=None) -> Path:
    """Runs the `enat sample ...` line the app printed, with its --out moved to ``out``; returns --out."""
    argv = shlex.split(command)
    assert argv[:2] == ["enat", "sample"], command
    i = argv.index("--out")
    argv[i + 1] = str(out)
    assert main([*argv[1:], "--no_progress"] if "--edit" not in argv else argv[1:]) == 0
    if capsys is not None:
        capsys.readouterr()
    return out


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))
