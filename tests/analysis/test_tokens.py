"""analysis/tokens.py: the default validation shards come from a registry the demo fills from above."""
import pytest
from analysis_helpers import tiny_nat

from enat_lightning.analysis import tokens
from enat_lightning.analysis.tokens import default_val_shards, load_tokens, masked_token_loss, register_val_shards
from enat_lightning.errors import UserError
from enat_lightning.models import NATConfig


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(tokens, "VAL_SHARDS", [])
    return tokens.VAL_SHARDS


def test_no_registered_data_set_asks_for_the_flag(registry):
    cfg = NATConfig(codebook_size=32, num_classes=5, grid=4, width=32, heads=4, depth=2)
    with pytest.raises(UserError, match=r"pass --data .*grid 4, codebook_size 32.*no data set is registered"):
        default_val_shards(cfg)
    register_val_shards(lambda c: None)  # a data set that does not fit
    with pytest.raises(UserError, match="do not fit"):
        default_val_shards(cfg, flag="--val")
    register_val_shards(lambda c: f"shards/{c.grid}")
    assert default_val_shards(cfg) == "shards/4"


def test_the_demo_registers_its_validation_shards():
    """Importing the demo data fills the registry: a network shaped like the digits gets their val shards;
    another shape is answered by the flag."""
    from enat_lightning.demo.data import DATASETS, demo_paths, val_shards

    assert val_shards in tokens.VAL_SHARDS
    digits = DATASETS["digits"]
    cfg = NATConfig(codebook_size=digits.codebook_size, num_classes=10, grid=digits.grid, width=32, heads=4, depth=2)
    spec = default_val_shards(cfg)
    assert spec == str(demo_paths(None, digits).val)
    toks, labels = load_tokens(spec, limit=5)
    assert toks.shape == (5, digits.grid ** 2) and labels.shape == (5,)
    assert val_shards(NATConfig(codebook_size=7, num_classes=10, grid=4, width=32, heads=4, depth=2)) is None


def test_masked_token_loss_uses_the_same_masks_for_every_call():
    import torch

    net = tiny_nat()
    toks = torch.randint(0, 32, (6, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(6, dtype=torch.long)
    a = masked_token_loss(net, toks, labels, batch_size=4, seed=3)
    assert a == masked_token_loss(net, toks, labels, batch_size=4, seed=3)
    assert a != masked_token_loss(net, toks, labels, batch_size=4, seed=4)
    with pytest.raises(UserError, match=r"tokens must be \(N, 16\)"):
        masked_token_loss(net, toks[:, :9], labels)
