"""Shared pieces of the command-side reliability tests: tiny checkpoints and a one-line-error check."""
from __future__ import annotations

from pathlib import Path

import torch

from enat_lightning.cli import main
from enat_lightning.models import ENATConfig, NATConfig, build_model
from enat_lightning.sampling.checkpoint import save_generator_checkpoint

TINY_ENAT = ENATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)
TINY_NAT = NATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=2, depth=2)


def tiny_checkpoint(path: Path, cfg=TINY_ENAT) -> Path:
    torch.manual_seed(0)
    return save_generator_checkpoint(path, cfg, build_model(cfg).state_dict())


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Runs `enat argv` in process: exit 2 and exactly one stderr line `enat: error: ...` holding the needles."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("enat: error: "), err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]
