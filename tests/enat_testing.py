"""Test helpers shared across the suite (a unique module name: importable from any test file,
since pytest puts tests/ on sys.path for the root conftest)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # in the repository: a fresh clone is self-contained


def load_fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"fixture file {path} is missing: it is part of the repository (tests/fixtures/README.md)")
    return torch.load(path, weights_only=True)


def tolerance(ref: torch.Tensor) -> float:
    """The fixtures README's suggested tolerance: 1e-4 * max(1, |ref|max)."""
    return 1e-4 * max(1.0, ref.abs().max().item())


def perturbed(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """``model`` in eval mode with every weight + N(0, std^2) (seed 0): adaLN-Zero starts every block
    as the identity, so a freshly built network would carry no signal through most paths."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()
