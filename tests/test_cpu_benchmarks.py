"""The CPU benchmark scripts still run against today's library (they are not tests of speed):
``train_step.py``'s step on a tiny module, ``vs_official.py``'s reuse strata and fixed draws."""
import importlib.util
import sys

import lightning.pytorch as pl
import pytest
import torch

from enat_testing import REPO
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _load(name):
    sys.path.insert(0, str(REPO / "benchmarks"))  # their sibling helper _peak.py
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


@pytest.mark.parametrize("reuse_prob", [0.0, 1.0])
def test_train_step_benchmark_step_runs(reuse_prob):
    bench = _load("train_step")
    cfg = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)
    module = ENATModule(cfg, reuse_prob=reuse_prob, warmup_steps=0).train()
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    module.log = lambda *a, **k: None
    optimizer = module.configure_optimizers()["optimizer"]
    before = [p.detach().clone() for p in module.ema.parameters()]
    g = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(0, 32, (4, 16), generator=g), "label": torch.randint(0, 4, (4,), generator=g)}
    bench.make_step(module, batch, optimizer)()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.ema.parameters()))  # the EMA moved


def test_vs_official_strata_and_fixed_scalar_draws():
    bench = _load("vs_official")
    assert bench.strata(5) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    draws = bench._FixedScalarDraws()
    assert draws.rand(3, 4).shape == (3, 4)  # not a scalar draw: random, as torch
    draws.value = 0.3
    assert draws.rand(1).item() == pytest.approx(0.3) and draws.rand(2).unique().numel() == 2
    assert draws.argsort is torch.argsort  # everything else is torch's
