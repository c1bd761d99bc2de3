"""Parity with the official ENAT implementation (fixtures from LeapLabTHU/ENAT @ 550f22c)."""
import pytest
import torch

from enat_lightning.models import ENATOutput, from_official
from enat_testing import tolerance


@pytest.fixture(scope="module")
def model(official_enat):
    return from_official(official_enat["config"], official_enat["state_dict"])


def assert_close(out, ref, name):
    err = (out - ref).abs().max().item()
    assert err <= tolerance(ref), f"{name}: max error {err:.3g} > {tolerance(ref):.3g}"


@pytest.mark.parametrize("case", ["fwd_noreuse", "fwd_allmasked"])
def test_forward_without_reuse(model, official_enat, case):
    c = official_enat["cases"][case]
    out = model(c["masked_ids"], c["context"])
    assert out.logits.shape == c["logits"].shape
    assert_close(out.logits, c["logits"], f"{case} logits")
    assert_close(out.feat, c["feat"], f"{case} feat")
    assert torch.equal(out.masking, c["masking"])


def test_forward_with_reuse(model, official_enat):
    c = official_enat["cases"]["fwd_reuse"]
    prev = model(c["prev_masked_ids"], c["context"])
    assert_close(prev.logits, c["prev_logits"], "prev logits")
    assert_close(prev.feat, c["prev_feat"], "prev feat")
    given = ENATOutput(logits=c["prev_logits"], feat=c["prev_feat"], masking=c["prev_masking"])
    out = model(c["masked_ids"], c["context"], prev=given)
    assert_close(out.logits, c["logits"], "reuse logits")
    assert_close(out.feat, c["feat"], "reuse feat")


def test_reuse_chain_compounds_projection(model, official_enat):
    c = official_enat["cases"]["fwd_reuse_chain"]
    prev = None
    for i in range(c["n"]):
        out = model(c[f"masked_ids_{i}"], c["context"], prev=prev)
        assert_close(out.logits, c[f"logits_{i}"], f"chain {i} logits")
        assert_close(out.feat, c[f"feat_{i}"], f"chain {i} feat")
        assert torch.equal(out.masking, c[f"masking_{i}"])
        prev = out


def test_masked_only_logits_equal_full_logits_at_masked_positions(model, official_enat):
    c = official_enat["cases"]["fwd_noreuse"]
    full = model(c["masked_ids"], c["context"])
    part = model(c["masked_ids"], c["context"], logits_at="masked")
    B = c["masked_ids"].shape[0]
    assert torch.allclose(part.logits, full.logits[full.masking].view(B, -1, full.logits.shape[-1]), atol=1e-5)


def test_unused_official_keys_are_accepted_and_mismatches_named(official_enat):
    sd = dict(official_enat["state_dict"])
    assert any(k.startswith("prev_embedder.") for k in sd)
    from_official(official_enat["config"], sd)  # prev_embedder.* ignored
    del sd["blocks.0.attn.q.weight"]
    sd["bogus.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"encoder\.0\.attn\.q\.weight[\s\S]*bogus\.weight"):
        from_official(official_enat["config"], sd)
    bad_cfg = dict(official_enat["config"], hidden_size=32, num_heads=4)
    with pytest.raises(ValueError, match="shape mismatches"):
        from_official(bad_cfg, official_enat["state_dict"])


def test_model_is_in_eval_mode(model):
    assert not model.training
