"""ENAT network behaviour beyond parity: validation, reuse invariants, ablation switches."""
import subprocess
import sys

import pytest
import torch

from enat_lightning.models import ENAT, ENATConfig, NATConfig, build_model, config_from_dict, preset
from enat_lightning.models.stats import count_parameters, count_parameters_paper

TINY = dict(codebook_size=32, num_classes=5, grid=4, width=32, heads=4, enc_depth=2, dec_depth=1)


def tiny(**kw) -> ENAT:
    torch.manual_seed(0)
    model = ENAT(ENATConfig(**{**TINY, **kw})).eval()
    # adaLN starts at zero (identity blocks); perturb so every path carries signal
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def masked_ids(B=3, n_masked=9, L=16, V=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, L), generator=g)
    for b in range(B):
        ids[b, torch.randperm(L, generator=g)[:n_masked]] = V
    return ids


def reveal(ids, n, V=32, seed=1):
    """A copy of ids with n more masked positions per row revealed."""
    g = torch.Generator().manual_seed(seed)
    out = ids.clone()
    for b in range(ids.shape[0]):
        pos = (ids[b] == V).nonzero().flatten()
        pick = pos[torch.randperm(len(pos), generator=g)[:n]]
        out[b, pick] = torch.randint(0, V, (n,), generator=g)
    return out


LABELS = torch.tensor([0, 4, 5])


def test_output_shapes():
    out = tiny()(masked_ids(), LABELS)
    assert out.logits.shape == (3, 16, 32) and out.feat.shape == (3, 16, 32) and out.masking.shape == (3, 16)


@pytest.mark.parametrize("bad, match", [
    (lambda ids: ids.masked_fill(ids == 0, 33), r"\[0, 32\]"),
    (lambda ids: ids[:, :15], r"shape \(B, 16\)"),
    (lambda ids: ids.float(), "integer"),
])
def test_bad_ids_are_refused(bad, match):
    ids = masked_ids()
    ids[0, 0] = 0
    with pytest.raises(ValueError, match=match):
        tiny()(bad(ids), LABELS)


def test_rows_with_different_mask_counts_are_refused():
    ids = masked_ids()
    ids[0, ids[0] != 32] = 32
    with pytest.raises(ValueError, match="same number of masked tokens"):
        tiny()(ids, LABELS)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        tiny()(masked_ids(), torch.tensor([0, 1, 6]))
    with pytest.raises(ValueError, match="shape"):
        tiny()(masked_ids(), torch.tensor([0, 1]))


def test_prev_must_be_an_earlier_step():
    model = tiny()
    ids = masked_ids()
    later = reveal(ids, 3)
    prev = model(later, LABELS)
    with pytest.raises(ValueError, match="visible tokens must stay visible"):
        model(ids, LABELS, prev=prev)


def test_reuse_with_empty_previous_visible_set_equals_no_reuse():
    model = tiny()
    all_masked = torch.full((3, 16), 32)
    prev = model(all_masked, LABELS)
    ids = masked_ids()
    a, b = model(ids, LABELS), model(ids, LABELS, prev=prev)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.allclose(a.feat, b.feat, atol=1e-5)


def test_reuse_keeps_projected_features_of_previously_visible_tokens():
    model = tiny()
    ids = masked_ids(n_masked=12)
    prev = model(ids, LABELS)
    out = model(reveal(ids, 4), LABELS, prev=prev)
    was_visible = ~prev.masking
    projected = model.reuse_proj(prev.feat)
    assert torch.allclose(out.feat[was_visible], projected[was_visible], atol=1e-6)


@pytest.mark.parametrize("reuse_layers", ["last", "layerwise"])
def test_teacher_without_decoder_gives_the_same_reuse_step(reuse_layers):
    """decode=False skips the decoder: a reuse step reading only previously visible features
    (reuse_tokens="visible", the default) computes exactly what it computes from a full pass."""
    model = tiny(reuse_layers=reuse_layers)
    assert not model.reuse_reads_masked and tiny(reuse_tokens="all").reuse_reads_masked
    prev_ids = masked_ids(n_masked=12)
    ids = reveal(prev_ids, 4)
    calls = []
    hook = model.decoder[0].register_forward_hook(lambda *a: calls.append(1))
    full = model(prev_ids, LABELS, logits_at="none")
    light = model(prev_ids, LABELS, logits_at="none", decode=False)
    hook.remove()
    assert len(calls) == 1 and light.logits is None  # the decoder ran for the full pass only
    visible = ~full.masking
    assert torch.equal(light.feat[visible], full.feat[visible])
    assert torch.equal(light.feat[full.masking], model.embed(prev_ids)[full.masking])  # the decoder input
    a, b = model(ids, LABELS, prev=full), model(ids, LABELS, prev=light)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.feat, b.feat)
    with pytest.raises(ValueError, match="decode=False"):
        model(prev_ids, LABELS, logits_at="masked", decode=False)


def test_masked_logits_do_not_depend_on_unrelated_rows():
    model = tiny()
    ids = masked_ids()
    full = model(ids, LABELS)
    single = model(ids[1:2], LABELS[1:2])
    assert torch.allclose(full.logits[1:2], single.logits, atol=1e-5)


def test_head_does_not_train_the_embeddings():
    model = tiny().train()
    out = model(masked_ids(), LABELS)
    out.logits.sum().backward()
    # gradient reaches the embeddings only through the input path, never through the tied head:
    # rows of codes absent from the input get no gradient.
    ids = masked_ids()
    absent = sorted(set(range(32)) - set(ids.flatten().tolist()))
    assert absent, "test needs at least one absent code"
    assert model.embed.word_embeddings.weight.grad[absent].abs().max() == 0


@pytest.mark.parametrize("switch", [dict(attention="self_cross"), dict(reuse_projection=False),
                                    dict(reuse_tokens="all"), dict(reuse_layers="layerwise")])
def test_ablation_switches_run_with_reuse_and_differ(switch):
    model = tiny(**switch)
    ids = masked_ids(n_masked=12)
    prev = model(ids, LABELS)
    out = model(reveal(ids, 4), LABELS, prev=prev)
    assert torch.isfinite(out.logits).all() and out.logits.shape == (3, 16, 32)
    base = tiny()
    base_out = base(reveal(ids, 4), LABELS, prev=base(ids, LABELS))
    if switch.get("attention") != "self_cross":  # same weights, different reuse semantics
        assert not torch.allclose(base_out.logits, out.logits)


def test_layerwise_reuse_reads_previous_layer_features():
    model = tiny(reuse_layers="layerwise")
    ids = masked_ids(n_masked=12)
    prev = model(ids, LABELS)
    assert prev.layer_feats.shape == (2, 3, 16, 32)
    nxt = reveal(ids, 4)
    a = model(nxt, LABELS, prev=prev)
    prev.layer_feats[1] += 1.0
    b = model(nxt, LABELS, prev=prev)
    assert not torch.allclose(a.logits, b.logits)


def test_no_reuse_projection_uses_raw_features():
    model = tiny(reuse_projection=False)
    ids = masked_ids(n_masked=12)
    prev = model(ids, LABELS)
    out = model(reveal(ids, 4), LABELS, prev=prev)
    assert torch.allclose(out.feat[~prev.masking], prev.feat[~prev.masking])


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="divisible"):
        ENATConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="attention"):
        ENATConfig(attention="linear")
    with pytest.raises(ValueError, match="attention_removal"):
        NATConfig(attention_removal="everything")
    for cfg in (preset("enat-s"), preset("nat-baseline")):
        assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown enat config keys"):
        config_from_dict({"arch": "enat", "widht": 3})


def test_parameter_counts_match_paper():
    # The paper counts the official code's unused `prev_embedder` MLP; see models/stats.py.
    assert round(count_parameters_paper(preset("enat-s")) / 1e6, 2) == 50.38
    assert abs(count_parameters_paper(preset("enat-b")) / 219e6 - 1) < 0.01
    assert abs(count_parameters_paper(preset("enat-l")) / 574e6 - 1) < 0.01
    assert count_parameters(preset("enat-s")) < count_parameters_paper(preset("enat-s"))


def test_models_package_does_not_import_lightning():
    code = "import sys, enat_lightning.models, enat_lightning.models.stats; " \
           "bad=[m for m in ('lightning','pytorch_lightning') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_model_dispatch():
    assert type(build_model(ENATConfig(**TINY))).__name__ == "ENAT"
    with pytest.raises(TypeError):
        build_model({"width": 3})
