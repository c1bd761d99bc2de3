"""The one YAML resolution: composed training configs + dotted overrides through LightningCLI's own parser."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from enat_lightning.errors import UserError
from enat_lightning.models import NATConfig
from enat_lightning.training_config import get, model_config, resolve_training_config, trains_with_reuse

REPO = Path(__file__).resolve().parents[1]


def test_composes_like_enat_fit_and_keeps_the_class_on_dotted_overrides(tmp_path):
    nat = tmp_path / "nat.yaml"
    nat.write_text("model:\n  reuse_prob: 0.0\n  net:\n    class_path: enat_lightning.models.NATConfig\n"
                   "    init_args: {grid: 4, width: 32, heads: 2, depth: 2, codebook_size: 16, num_classes: 3}\n")
    more = tmp_path / "more.yaml"
    more.write_text("model:\n  net:\n    init_args: {depth: 3}\n")
    cfg = resolve_training_config([nat, more], ["model.net.init_args.width=64", "model.lr=0.5"])
    assert cfg["model"]["net"]["class_path"] == "enat_lightning.models.NATConfig"
    net = model_config(cfg)
    assert isinstance(net, NATConfig) and (net.width, net.depth, net.grid) == (64, 3, 4)
    assert get(cfg, "model.lr") == 0.5 and not trains_with_reuse(cfg)
    assert get(cfg, "model.warmup_steps") is not None  # defaults filled in by the parser


def test_repository_configs_resolve_including_the_text_model():
    for name in ("enat_s.yaml", "demo.yaml", "enat_b_coco.yaml"):
        cfg = resolve_training_config([REPO / "experiments" / name])
        assert model_config(cfg).width > 0 and trains_with_reuse(cfg)


def test_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.yaml does not exist"):
        resolve_training_config([tmp_path / "none.yaml"])
    with pytest.raises(UserError, match="widthx"):
        resolve_training_config([REPO / "experiments/demo.yaml"], ["model.net.init_args.widthx=3"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        resolve_training_config([REPO / "experiments/demo.yaml"], ["trainer.max_steps"])


def test_resolution_does_not_reseed_anything():
    torch.manual_seed(5)
    random.seed(5)
    expect_t, expect_r = torch.rand(1), random.random()
    torch.manual_seed(5)
    random.seed(5)
    resolve_training_config([REPO / "experiments/demo.yaml"])  # holds seed_everything: 1234
    assert torch.equal(torch.rand(1), expect_t) and random.random() == expect_r
