"""The optional cosine decay of the learning rate (``model.lr_decay_steps``; the demo uses it)."""
from __future__ import annotations

import math

import pytest

from enat_lightning.models import ENATConfig
from enat_lightning.lr_schedule import lr_factor, warmup_factor
from enat_lightning.module import ENATModule


def test_no_decay_is_the_official_warmup_then_constant():
    assert [lr_factor(s, 4) for s in (0, 1, 4, 100)] == [warmup_factor(s, 4) for s in (0, 1, 4, 100)]


def test_cosine_decay_from_the_end_of_warmup_to_the_floor():
    f = [lr_factor(s, 10, 110, 0.1) for s in (0, 5, 10, 60, 110, 500)]
    assert f[:3] == [0.0, 0.5, 1.0]
    assert math.isclose(f[3], 0.1 + 0.9 * 0.5)  # half way: the cosine's midpoint
    assert f[4] == pytest.approx(0.1) and f[5] == pytest.approx(0.1)  # stays at the floor after decay_steps
    assert all(a >= b for a, b in zip(f[2:], f[3:]))


def test_the_module_schedules_with_the_decay_and_rejects_bad_values():
    cfg = ENATConfig(codebook_size=16, num_classes=2, grid=2, width=8, heads=2, enc_depth=1, dec_depth=1)
    m = ENATModule(cfg, lr=1.0, warmup_steps=2, lr_decay_steps=12, min_lr_ratio=0.0)
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(14):
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    assert lrs[2] == 1.0 and lrs[7] == pytest.approx(0.5) and lrs[12] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_decay_steps"):
        ENATModule(cfg, lr_decay_steps=-1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        ENATModule(cfg, min_lr_ratio=2.0)
