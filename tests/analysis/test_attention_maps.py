"""Attention maps (paper Fig. 2a): recomputed weights, interaction masses, per-block / per-step outputs."""
import csv

import pytest
import torch
from analysis_helpers import V, tiny_enat, tiny_nat

from enat_lightning.analysis.attention_maps import (attention_probs, interaction_mass, record_attention,
                                                    run_attention_maps, write_attention_map_outputs)
from enat_lightning.analysis.attention_removal import AttentionCut
from enat_lightning.models.nat import attention_allowed


def half_masked():
    ids = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(0))
    ids[:, ::2] = V
    return ids


def test_recomputed_weights_reproduce_the_attention_output():
    model = tiny_nat()
    attn = model.blocks[0].attn
    own = torch.randn(2, 16, 32)
    mask = attention_allowed(half_masked() == V, "mask_to_visible")
    probs = attention_probs(attn, own, None, mask)  # (B, H, n, Lk)
    v = attn.kv.B(own)[..., 32:].view(2, 16, 4, 8).transpose(1, 2)
    out = attn.proj((probs @ v).transpose(1, 2).reshape(2, 16, 32))
    torch.testing.assert_close(out, attn(own, None, mask), atol=1e-5, rtol=1e-5)
    # with context tokens (ENAT): keys are [context ; own]
    eattn = tiny_enat().decoder[0].attn
    ctx = torch.randn(2, 5, 32)
    probs = attention_probs(eattn, own[:, :7], ctx)
    assert probs.shape == (2, 4, 7, 12)
    kv = torch.cat([eattn.kv.A(ctx), eattn.kv.B(own[:, :7])], 1)[..., 32:].view(2, 12, 4, 8).transpose(1, 2)
    out = eattn.proj((probs @ kv).transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(out, eattn(own[:, :7], ctx), atol=1e-5, rtol=1e-5)


def test_interaction_mass_on_hand_built_weights():
    # 1 sample, 1 head, 3 tokens: token 0 visible, 1-2 masked
    probs = torch.tensor([[[[0.2, 0.3, 0.5], [0.6, 0.4, 0.0], [1.0, 0.0, 0.0]]]])
    kind = torch.tensor([[False, True, True]])
    m = interaction_mass(probs, kind, kind)
    assert m["mask_to_visible"].item() == pytest.approx(0.8)  # (0.6 + 1.0) / 2
    assert m["mask_to_mask"].item() == pytest.approx(0.2)
    assert m["visible_to_visible"].item() == pytest.approx(0.2)
    assert m["visible_to_mask"].item() == pytest.approx(0.8)
    none_visible = interaction_mass(probs, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    assert torch.isnan(none_visible["visible_to_mask"]).all()


def test_nat_maps_see_the_inference_cut():
    net = tiny_nat()
    full = run_attention_maps(net, [0, 1], steps=4, generator=torch.Generator().manual_seed(0), cfg_scale=1.0)
    cut = run_attention_maps(AttentionCut(net, "mask_to_visible"), [0, 1], steps=4,
                             generator=torch.Generator().manual_seed(0))
    assert full.layers == ["block0", "block1"] and full.masses["mask_to_visible"].shape == (2, 4)
    mv = full.masses["mask_to_visible"]
    assert mv[:, 0].abs().max() == 0  # step 1: nothing visible yet
    assert bool((mv[:, 1:] > 0.01).all())
    torch.testing.assert_close(mv + full.masses["mask_to_mask"], torch.ones(2, 4))
    # the cut leaves each [MASK] query only its own key plus other masks: zero visible mass
    assert cut.masses["mask_to_visible"].abs().max() < 1e-6


def test_enat_maps_roles():
    res = run_attention_maps(tiny_enat(), [0, 1, 2], steps=4, generator=torch.Generator().manual_seed(0),
                             cfg_scale=2.0)
    assert res.layers == ["enc0", "enc1", "dec0"]
    assert torch.isnan(res.masses["mask_to_visible"][:2]).all()  # the encoder has no [MASK] queries
    dec = res.masses["mask_to_visible"][2]
    assert dec[0] == 0 and bool((dec[1:] > 0).all())
    # the decoder's keys are [visible ; masks]: the visible share grows with the step
    share = res.masses["visible_key_share"][2]
    assert bool((share[1:] > share[:-1]).all())


def test_self_cross_models_are_refused():
    with pytest.raises(ValueError, match="self_cross"):
        with record_attention(tiny_enat(attention="self_cross")):
            pass


def test_map_outputs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    res = run_attention_maps(tiny_nat(), [0], steps=3, generator=torch.Generator().manual_seed(0))
    w = SummaryWriter(str(tmp_path / "tb"))
    paths = write_attention_map_outputs(res, tmp_path / "o", logger=w)
    w.close()
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 2 * 3 and set(rows[0]) >= {"layer", "step", "mask_to_visible", "visible_key_share"}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
