"""NAT baseline and the Fig. 2 attention removals: a removed interaction has no influence, a kept one does."""
import pytest
import torch

from enat_lightning.models import NAT, NATConfig
from enat_lightning.models.nat import attention_allowed

V, L = 32, 16
LABELS = torch.tensor([1, 2])


def tiny_nat(removal="none", depth=2) -> NAT:
    torch.manual_seed(0)
    model = NAT(NATConfig(codebook_size=V, num_classes=5, grid=4, width=32, heads=4, depth=depth,
                          attention_removal=removal)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def example_ids():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (2, L), generator=g)
    ids[:, ::2] = V  # 8 masked (even positions), 8 visible (odd)
    return ids


def outputs(model, ids):
    with torch.no_grad():
        return model(ids, LABELS).feat


def perturb_visible_ids(ids, positions=None):
    out = ids.clone()
    vis = (ids != V) if positions is None else torch.zeros_like(ids, dtype=torch.bool).index_fill_(1, positions, True)
    out[vis] = (out[vis] + 7) % V
    return out


def perturb_mask_embedding(model):
    with torch.no_grad():
        model.embed.word_embeddings.weight[V] += torch.randn(32, generator=torch.Generator().manual_seed(1))


def influence(removal, depth, perturb, read):
    """Max change of the read positions' features when `perturb` is applied."""
    model = tiny_nat(removal, depth)
    ids = example_ids()
    before = outputs(model, ids)
    ids2 = perturb(model, ids)
    after = outputs(model, ids2)
    return (before - after)[:, read].abs().max().item()


MASKED, VISIBLE = torch.arange(0, L, 2), torch.arange(1, L, 2)


def visible_ids_change(model, ids):
    return perturb_visible_ids(ids)


def mask_embedding_changes(model, ids):
    perturb_mask_embedding(model)
    return ids


def one_visible_changes(model, ids):
    return perturb_visible_ids(ids, positions=torch.tensor([1]))


def one_mask_position_changes(model, ids):
    with torch.no_grad():
        model.embed.position_embeddings.weight[0] += torch.randn(32, generator=torch.Generator().manual_seed(2))
    return ids


@pytest.mark.parametrize("removal, depth, perturb, read", [
    ("mask_to_visible", 3, visible_ids_change, MASKED),         # masks never read visible tokens
    ("visible_to_mask", 3, mask_embedding_changes, VISIBLE),    # visible tokens never read masks
    ("visible_to_visible", 1, one_visible_changes, VISIBLE[1:]),  # other visible tokens not read
    ("mask_to_mask", 1, one_mask_position_changes, MASKED[1:]),   # other mask tokens not read
])
def test_removed_interaction_has_no_influence_kept_one_does(removal, depth, perturb, read):
    assert influence(removal, depth, perturb, read) == 0.0
    assert influence("none", depth, perturb, read) > 1e-4


def test_mask_to_visible_removal_keeps_visible_to_mask():
    # cutting [M]->[V] reads must not cut [V]->[M] reads
    assert influence("mask_to_visible", 1, mask_embedding_changes, VISIBLE) > 1e-4


def test_every_query_keeps_a_key():
    for removal in ("visible_to_visible", "mask_to_mask", "mask_to_visible", "visible_to_mask"):
        for masking in (torch.zeros(1, L, dtype=torch.bool), torch.ones(1, L, dtype=torch.bool)):
            allowed = attention_allowed(masking, removal)
            assert allowed.any(dim=-1).all()
    assert attention_allowed(torch.zeros(1, L, dtype=torch.bool), "none") is None


def test_nat_runs_fully_visible_and_at_inference_time_override():
    model = tiny_nat("none")
    ids = torch.randint(0, V, (2, L))
    out = model(ids, LABELS, attention_removal="visible_to_visible")
    assert torch.isfinite(out.logits).all()
    masked = example_ids()
    a = model(masked, LABELS, attention_removal="mask_to_visible").feat
    b = model(perturb_visible_ids(masked), LABELS, attention_removal="mask_to_visible").feat
    assert torch.equal(a[:, MASKED], b[:, MASKED])


def test_masked_logits_path():
    model = tiny_nat()
    ids = example_ids()
    full = model(ids, LABELS)
    part = model(ids, LABELS, logits_at="masked")
    assert torch.allclose(part.logits, full.logits[:, MASKED], atol=1e-5)
