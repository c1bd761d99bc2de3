"""ENAT with condition="text": shapes, text-as-context semantics, reuse equivalences, CFG null condition,
configs, the conditioning interface."""
import pytest
import torch

from enat_lightning.models import ENAT, Captions, Condition, ENATConfig, build_model, config_from_dict
from enat_lightning.models.conditioning import drop_captions, masked_mean
from enat_lightning.models.stats import count_parameters

V, L, T, DT = 32, 16, 6, 12
TINY = dict(codebook_size=V, grid=4, width=32, heads=4, enc_depth=2, dec_depth=1, text_dim=DT, text_len=T,
            embed_dropout=0.0, condition="text")


def TextConfig(**kw) -> ENATConfig:
    """The text model's config: ENAT-B with CLIP-sized captions unless overridden."""
    return ENATConfig(**{"width": 768, "heads": 8, "enc_depth": 15, "dec_depth": 1, "condition": "text", **kw})


def tiny(**kw) -> ENAT:
    torch.manual_seed(0)
    model = ENAT(ENATConfig(**{**TINY, **kw})).eval()
    with torch.no_grad():  # adaLN/constant modulation start at zero: perturb so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def masked_ids(B=3, n_masked=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, L), generator=g)
    for b in range(B):
        ids[b, torch.randperm(L, generator=g)[:n_masked]] = V
    return ids


def reveal(ids, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = ids.clone()
    for b in range(ids.shape[0]):
        pos = (ids[b] == V).nonzero().flatten()
        out[b, pos[torch.randperm(len(pos), generator=g)[:n]]] = torch.randint(0, V, (n,), generator=g)
    return out


def captions(B=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(B, T, DT, generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate([T, 3, 1, 4, 2][:B]):
        mask[b, :n] = True
    return Captions(text, mask)


MODES = [dict(text_adaln=a) for a in ("none", "pooled", "constant")] + [
    dict(text_in="encoder"), dict(text_in="decoder"), dict(text_shared_kv=True),
    dict(reuse_tokens="all"), dict(reuse_layers="layerwise")]


@pytest.mark.parametrize("kw", MODES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_shapes_and_reuse_chain(kw):
    model = tiny(**kw)
    caps = captions()
    ids = masked_ids()
    out = model(ids, caps)
    assert out.logits.shape == (3, L, V) and out.feat.shape == (3, L, 32) and out.masking.shape == (3, L)
    assert model(ids, caps, logits_at="masked").logits.shape == (3, 9, V)
    ctx = model.prepare_condition(caps)
    ids2 = reveal(ids, 4)
    out2 = model(ids2, ctx, prev=out)  # reuse with R from the previous call
    out3 = model(reveal(ids2, 5), ctx, prev=out2)  # fully revealed: decoder skipped
    assert torch.isfinite(out2.logits).all() and torch.isfinite(out3.logits).all()
    assert not torch.allclose(out2.logits, model(ids2, ctx).logits)  # reuse really changes the computation


def test_prepared_condition_equals_raw_captions():
    model = tiny()
    caps = captions()
    ids = masked_ids()
    a = model(ids, caps)
    b = model(ids, model.prepare_condition(caps))
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("kw", [dict(), dict(text_adaln="pooled"), dict(text_in="encoder")])
def test_reuse_from_all_masked_equals_plain_forward(kw):
    # With nothing visible in prev there is nothing to reuse: the newly revealed tokens read only
    # the text, exactly as the plain encoder's visible tokens do. So both paths must agree.
    model = tiny(**kw)
    ctx = model.prepare_condition(captions())
    all_masked = torch.full((3, L), V)
    prev = model(all_masked, ctx)
    ids = reveal(all_masked, 7)
    torch.testing.assert_close(model(ids, ctx, prev=prev).logits, model(ids, ctx).logits, atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_ignored_and_real_tokens_matter():
    model = tiny()
    text, mask = captions().text, captions().mask
    ids = masked_ids()
    noisy = text.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), DT) * 5  # change only padding positions
    assert torch.equal(model(ids, Captions(text, mask)).logits, model(ids, Captions(noisy, mask)).logits)
    changed = text.clone()
    changed[:, 0] += 1.0  # change a real token of every row
    diff = (model(ids, Captions(text, mask)).logits - model(ids, Captions(changed, mask)).logits).abs().amax(dim=(1, 2))
    assert bool((diff > 1e-4).all())
    # text_use_mask=False attends to every position, padding included
    unmasked = tiny(text_use_mask=False)
    assert not torch.allclose(unmasked(ids, Captions(text, mask)).logits, unmasked(ids, Captions(noisy, mask)).logits)


def test_rows_are_independent():
    model = tiny(text_adaln="pooled")
    caps = captions()
    ids = masked_ids()
    full = model(ids, caps).logits
    for b in range(3):
        row = model(ids[b:b + 1], caps[b:b + 1]).logits
        torch.testing.assert_close(row, full[b:b + 1], atol=1e-5, rtol=1e-5)


def test_text_in_decoder_leaves_encoder_unconditioned():
    model = tiny(text_in="decoder")
    caps = captions()
    shifted = Captions(caps.text + 1.0, caps.mask)
    ids = masked_ids()
    a, b = model(ids, caps), model(ids, shifted)
    vis = ~a.masking
    assert torch.equal(a.feat[vis], b.feat[vis]) and not torch.allclose(a.feat[~vis], b.feat[~vis])
    enc = tiny(text_in="encoder")
    a, b = enc(ids, caps), enc(ids, shifted)
    assert not torch.allclose(a.feat[vis], b.feat[vis])


def test_null_condition_defaults_to_no_text_and_can_be_set():
    model = tiny()
    ids = masked_ids()
    cond = model.prepare_condition(captions())
    null = model.null_condition(cond)
    assert len(null) == 3 and null.mask.shape == (3, T) and not null.mask.any()
    out = model(ids, null)
    assert torch.isfinite(out.logits).all()
    # with no real token, text content is irrelevant: the null is "no text tokens"
    no_tokens = torch.zeros(3, T, dtype=torch.bool)
    assert torch.equal(out.logits, model(ids, Captions(torch.randn(3, T, DT), no_tokens)).logits)
    emb, m = torch.randn(T, DT), torch.tensor([True, True] + [False] * (T - 2))
    model.conditioner.set_null(emb, m)
    null = model.null_condition(cond)
    assert torch.equal(null.mask[1], m)
    ref = model.prepare_condition(Captions(emb.expand(3, -1, -1), m.expand(3, -1)))
    torch.testing.assert_close(null.vector, ref.vector)
    torch.testing.assert_close(model(ids, null).logits, model(ids, ref).logits)
    assert "text_embed.null_text" in model.state_dict() and "text_embed.null_mask" in model.state_dict()
    with pytest.raises(ValueError, match=r"\(6, 12\)"):
        model.conditioner.set_null(torch.randn(T, DT + 1), m)


def test_drop_condition():
    model = tiny()
    caps = captions(B=5)
    null_t, null_m = torch.full((T, DT), 7.0), torch.zeros(T, dtype=torch.bool)
    model.conditioner.set_null(null_t, null_m)
    data, net = model.drop_condition(caps, 0.0)
    assert data is net and torch.equal(net.text, caps.text) and torch.equal(net.mask, caps.mask)
    _, d1 = model.drop_condition(caps, 1.0)
    assert bool((d1.text == 7).all()) and not d1.mask.any()
    _, a = model.drop_condition(caps, 0.5, torch.Generator().manual_seed(3))
    _, b = model.drop_condition(caps, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a.text, b.text) and torch.equal(a.mask, b.mask)
    dropped = (a.text == 7).all(dim=(1, 2))
    assert torch.equal(a.mask[dropped], torch.zeros_like(a.mask[dropped]))
    assert torch.equal(a.text[~dropped], caps.text[~dropped])

    # sharded draws: rank r of w decides like rows r::w of the global batch
    def dropped_rows(n, shard):
        ones = Captions(torch.ones(n, T, DT), torch.ones(n, T, dtype=torch.bool))
        out = drop_captions(ones, torch.zeros(T, DT), null_m, 0.5, torch.Generator().manual_seed(4), shard=shard)
        return (out.text == 0).all(dim=(1, 2))
    assert torch.equal(dropped_rows(5, (1, 2)), dropped_rows(10, (0, 1))[1::2])
    with pytest.raises(ValueError, match="p_uncond"):
        model.drop_condition(caps, 1.5)


def test_condition_select_and_cat():
    model = tiny()
    caps = captions()
    ctx = model.prepare_condition(caps)
    both = Condition.cat([ctx, ctx.select(slice(0, 1))])
    assert len(both) == 4 and torch.equal(both.vector[3], ctx.vector[0]) and torch.equal(both.kv[0][3], ctx.kv[0][0])
    torch.testing.assert_close(ctx.vector, masked_mean(model.conditioner.proj(caps.text), caps.mask))
    # a row without padding has no mask; cat fills it in so rows keep their own masks
    full = model.prepare_condition(Captions(caps.text, torch.ones(3, T, dtype=torch.bool)))
    assert full.mask is None
    mixed = Condition.cat([full, ctx])
    assert mixed.mask[:3].all() and torch.equal(mixed.mask[3:], caps.mask)


@pytest.mark.parametrize("call, match", [
    (lambda m, ids, c: m(ids, Captions(c.text[:, :, :-1], c.mask)), r"\(B, 6, 12\)"),
    (lambda m, ids, c: m(ids, Captions(c.text, c.mask.long())), "bool"),
    (lambda m, ids, c: m(ids, (c.text, c.mask)), "Captions"),
    (lambda m, ids, c: m(ids, torch.zeros(3, dtype=torch.long)), "Captions"),
    (lambda m, ids, c: m(ids[:2], c), "3 rows"),
])
def test_bad_text_is_refused(call, match):
    model = tiny()
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, masked_ids(), captions())


def test_config_round_trip_and_checks():
    cfg = ENATConfig(**TINY, text_adaln="pooled")
    assert config_from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["condition"] == "text"
    assert isinstance(build_model(cfg), ENAT)
    for bad, match in [(dict(text_adaln="film"), "text_adaln"), (dict(text_in="all"), "text_in"),
                       (dict(text_len=0), "text_len"), (dict(width=30), "divisible"),
                       (dict(condition="caption"), "condition"), (dict(attention="self_cross"), "attention")]:
        with pytest.raises(ValueError, match=match):
            ENATConfig(**{**TINY, **bad})
    with pytest.raises(ValueError, match="text_dim.*condition: text"):
        ENATConfig(text_dim=12)  # text fields on a class model


def test_old_text_configs_and_checkpoints_still_load():
    """The former TextENATConfig (arch text_enat; adaln / shared_context_kv / use_text_mask; ENAT-B
    defaults) and its state-dict names (text_proj, null_text, null_mask) are read as before."""
    old = {"arch": "text_enat", "codebook_size": V, "grid": 4, "enc_depth": 2, "dec_depth": 1, "text_dim": DT,
           "text_len": T, "adaln": "pooled", "text_in": "both", "shared_context_kv": True, "use_text_mask": False}
    cfg = config_from_dict(old)
    assert (cfg.condition, cfg.width, cfg.heads, cfg.text_adaln, cfg.text_shared_kv, cfg.text_use_mask) == \
        ("text", 768, 8, "pooled", True, False)
    yaml_form = {"class_path": "enat_lightning.models.TextENATConfig", "init_args": {k: v for k, v in old.items() if k != "arch"}}
    assert config_from_dict(yaml_form) == cfg
    model = tiny()
    renamed = {k.replace("text_embed.proj.", "text_proj.").replace("text_embed.", ""): v
               for k, v in model.state_dict().items()}
    assert "text_proj.weight" in renamed and "null_text" in renamed
    fresh = ENAT(model.cfg)
    fresh.load_state_dict(renamed)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_parameter_counts_of_variants():
    """ENAT-B text variants (docs/text_to_image.md). adaLN costs 16 * 8 * D^2 (+bias); a shared context
    K/V saves 16 * 2 * D^2; without adaLN, shared K/V and the reuse MLP the count is the paper's
    ~116M (Table 5), with them all the ImageNet ENAT-B size."""
    base = TextConfig()
    D = base.width
    none = count_parameters(base)
    pooled = count_parameters(TextConfig(text_adaln="pooled"))
    const = count_parameters(TextConfig(text_adaln="constant"))
    shared = count_parameters(TextConfig(text_shared_kv=True))
    assert pooled - none == 16 * (8 * D * D + 8 * D)
    assert const - none == 16 * 8 * D
    assert none - shared == 16 * (2 * D * D + 2 * D)
    lean = count_parameters(TextConfig(text_shared_kv=True, reuse_projection=False))
    assert abs(lean / 1e6 - 116) < 1.0, lean
    # no unused parameters in the default model: every one gets a gradient
    model = tiny()
    model.train()
    caps = captions()
    out = model(masked_ids(), caps)
    out2 = model(reveal(masked_ids(), 3), caps, prev=out)
    out2.logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("text_adaln", ["none", "pooled", "constant"])
def test_cached_caption_kv_equals_caption_tokens_as_context(text_adaln):
    """Block(ctx_kv=kv.A(modulated captions)) == Block reading the caption tokens as context."""
    from enat_lightning.models.blocks import Block, modulate, plain_norm

    model = tiny(text_adaln=text_adaln)
    blk = model.encoder[0]
    torch.manual_seed(1)
    x, cond, text, ctx = torch.randn(2, 5, 32), torch.randn(2, 32), torch.randn(2, 3, 32), torch.randn(2, 4, 32)
    sh, sc = blk.adaLN_modulation(cond).chunk(Block.n_mod, dim=-1)[2:4]
    text_kv = blk.attn.kv.A(modulate(plain_norm(text), sh, sc))
    mask = torch.tensor([[True, False, True] + [True] * 9, [True] * 12])[:, None, None, :]
    torch.testing.assert_close(blk(x, cond, ctx=ctx, ctx_kv=text_kv, attn_mask=mask),
                               blk(x, cond, ctx=torch.cat([text, ctx], 1), attn_mask=mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blk(x, cond, ctx_kv=text_kv), blk(x, cond, ctx=text), atol=1e-5, rtol=1e-5)


def test_condition_caches_per_block_kv():
    model = tiny(text_in="decoder")
    ctx = model.prepare_condition(captions())
    assert len(ctx.kv) == 3 and ctx.kv[0] is None and ctx.kv[1] is None and ctx.kv[2].shape == (3, T, 64)
    both = Condition.cat([ctx, ctx.select(slice(1, 2))])
    assert both.kv[0] is None and torch.equal(both.kv[2][3], ctx.kv[2][1])
    assert model.supports_reuse


def test_class_and_text_models_share_the_interface():
    """prepare / null / cat / drop / example work the same way for a class model."""
    cls = ENAT(ENATConfig(codebook_size=V, num_classes=5, grid=4, width=32, heads=4, enc_depth=1, dec_depth=1)).eval()
    cond = cls.prepare_condition(torch.tensor([0, 3]))
    null = cls.null_condition(cond)
    torch.testing.assert_close(null.vector, cls.prepare_condition(torch.tensor([5, 5])).vector)
    ids = masked_ids(B=2)
    both = cls(torch.cat([ids, ids]), Condition.cat([cond, null])).logits
    torch.testing.assert_close(both[2:], cls(ids, torch.tensor([5, 5])).logits)
    data, net = cls.drop_condition(torch.tensor([0, 1, 2, 3]), 1.0, torch.Generator().manual_seed(0))
    assert data.tolist() == [5, 5, 5, 5] == net.tolist()
    assert cls.example_condition(2).tolist() == [0, 0]
    with pytest.raises(TypeError, match="class-conditional"):
        cls.prepare_condition(captions(B=2))
