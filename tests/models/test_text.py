"""TextENAT: shapes, text-as-context semantics, reuse equivalences, CFG null condition, configs."""
import pytest
import torch

from enat_lightning.models import TextContext, TextENAT, TextENATConfig, build_model, config_from_dict
from enat_lightning.models.stats import count_parameters
from enat_lightning.models.text import drop_text, masked_mean

V, L, T, DT = 32, 16, 6, 12
TINY = dict(codebook_size=V, grid=4, width=32, heads=4, enc_depth=2, dec_depth=1, text_dim=DT, text_len=T,
            embed_dropout=0.0)


def tiny(**kw) -> TextENAT:
    torch.manual_seed(0)
    model = TextENAT(TextENATConfig(**{**TINY, **kw})).eval()
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
    return text, mask


MODES = [dict(adaln=a) for a in ("none", "pooled", "constant")] + [dict(text_in="encoder"), dict(text_in="decoder"),
                                                                    dict(shared_context_kv=True)]


@pytest.mark.parametrize("kw", MODES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_shapes_and_reuse_chain(kw):
    model = tiny(**kw)
    text, mask = captions()
    ids = masked_ids()
    out = model(ids, text, mask)
    assert out.logits.shape == (3, L, V) and out.feat.shape == (3, L, 32) and out.masking.shape == (3, L)
    assert model(ids, text, mask, logits_at="masked").logits.shape == (3, 9, V)
    ctx = model.project_text(text, mask)
    ids2 = reveal(ids, 4)
    out2 = model(ids2, ctx, prev=out)  # reuse with R from the previous call
    out3 = model(reveal(ids2, 5), ctx, prev=out2)  # fully revealed: decoder skipped
    assert torch.isfinite(out2.logits).all() and torch.isfinite(out3.logits).all()
    assert not torch.allclose(out2.logits, model(ids2, ctx).logits)  # reuse really changes the computation


def test_projected_context_equals_raw_text():
    model = tiny()
    text, mask = captions()
    ids = masked_ids()
    a = model(ids, text, mask)
    b = model(ids, model.project_text(text, mask))
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("kw", [dict(), dict(adaln="pooled"), dict(text_in="encoder")])
def test_reuse_from_all_masked_equals_plain_forward(kw):
    # With nothing visible in prev there is nothing to reuse: the newly revealed tokens read only
    # the text, exactly as the plain encoder's visible tokens do. So both paths must agree.
    model = tiny(**kw)
    text, mask = captions()
    ctx = model.project_text(text, mask)
    all_masked = torch.full((3, L), V)
    prev = model(all_masked, ctx)
    ids = reveal(all_masked, 7)
    torch.testing.assert_close(model(ids, ctx, prev=prev).logits, model(ids, ctx).logits, atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_ignored_and_real_tokens_matter():
    model = tiny()
    text, mask = captions()
    ids = masked_ids()
    noisy = text.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), DT) * 5  # change only padding positions
    assert torch.equal(model(ids, text, mask).logits, model(ids, noisy, mask).logits)
    changed = text.clone()
    changed[:, 0] += 1.0  # change a real token of every row
    diff = (model(ids, text, mask).logits - model(ids, changed, mask).logits).abs().amax(dim=(1, 2))
    assert bool((diff > 1e-4).all())
    # use_text_mask=False attends to every position, padding included
    unmasked = tiny(use_text_mask=False)
    assert not torch.allclose(unmasked(ids, text, mask).logits, unmasked(ids, noisy, mask).logits)


def test_rows_are_independent():
    model = tiny(adaln="pooled")
    text, mask = captions()
    ids = masked_ids()
    full = model(ids, text, mask).logits
    for b in range(3):
        row = model(ids[b:b + 1], text[b:b + 1], mask[b:b + 1]).logits
        torch.testing.assert_close(row, full[b:b + 1], atol=1e-5, rtol=1e-5)


def test_text_in_decoder_leaves_encoder_unconditioned():
    model = tiny(text_in="decoder")
    text, mask = captions()
    ids = masked_ids()
    a, b = model(ids, text, mask), model(ids, text + 1.0, mask)
    vis = ~a.masking
    assert torch.equal(a.feat[vis], b.feat[vis]) and not torch.allclose(a.feat[~vis], b.feat[~vis])
    enc = tiny(text_in="encoder")
    a, b = enc(ids, text, mask), enc(ids, text + 1.0, mask)
    assert not torch.allclose(a.feat[vis], b.feat[vis])


def test_null_condition_defaults_to_no_text_and_can_be_set():
    model = tiny()
    ids = masked_ids()
    null_text, null_mask = model.null_condition(3)
    assert null_text.shape == (3, T, DT) and not null_mask.any()
    out = model(ids, null_text, null_mask)
    assert torch.isfinite(out.logits).all()
    # with no real token, text content is irrelevant: the null is "no text tokens"
    assert torch.equal(out.logits, model(ids, torch.randn(3, T, DT), null_mask).logits)
    emb, m = torch.randn(T, DT), torch.tensor([True, True] + [False] * (T - 2))
    model.set_null_condition(emb, m)
    nt, nm = model.null_condition(2)
    assert torch.equal(nt[1], emb) and torch.equal(nm[0], m)
    assert "null_text" in model.state_dict() and "null_mask" in model.state_dict()
    with pytest.raises(ValueError, match=r"\(6, 12\)"):
        model.set_null_condition(torch.randn(T, DT + 1), m)


def test_drop_text():
    text, mask = captions(B=5)
    null_t, null_m = torch.full((T, DT), 7.0), torch.zeros(T, dtype=torch.bool)
    t0, m0 = drop_text(text, mask, null_t, null_m, 0.0)
    assert torch.equal(t0, text) and torch.equal(m0, mask)
    t1, m1 = drop_text(text, mask, null_t, null_m, 1.0)
    assert bool((t1 == 7).all()) and not m1.any()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = drop_text(text, mask, null_t, null_m, 0.5, g1), drop_text(text, mask, null_t, null_m, 0.5, g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    dropped = (a[0] == 7).all(dim=(1, 2))
    assert torch.equal(a[1][dropped], torch.zeros_like(a[1][dropped]))
    assert torch.equal(a[0][~dropped], text[~dropped])
    # sharded draws: rank r of w decides like rows r::w of the global batch
    def dropped_rows(n, shard):
        ones, m = torch.ones(n, T, DT), torch.ones(n, T, dtype=torch.bool)
        out = drop_text(ones, m, torch.zeros(T, DT), null_m, 0.5, torch.Generator().manual_seed(4), shard=shard)
        return (out[0] == 0).all(dim=(1, 2))
    assert torch.equal(dropped_rows(5, (1, 2)), dropped_rows(10, (0, 1))[1::2])
    with pytest.raises(ValueError, match="p_uncond"):
        drop_text(text, mask, null_t, null_m, 1.5)


def test_text_context_select_and_cat():
    model = tiny()
    ctx = model.project_text(*captions())
    both = TextContext.cat([ctx, ctx.select(slice(0, 1))])
    assert len(both) == 4 and torch.equal(both.tokens[3], ctx.tokens[0])
    torch.testing.assert_close(ctx.pooled, masked_mean(ctx.tokens, ctx.mask))


@pytest.mark.parametrize("call, match", [
    (lambda m, ids, t, k: m(ids, t[:, :, :-1], k), r"\(B, 6, 12\)"),
    (lambda m, ids, t, k: m(ids, t, k.long()), "bool"),
    (lambda m, ids, t, k: m(ids, t), "text_mask is required"),
    (lambda m, ids, t, k: m(ids, m.project_text(t, k), k), "only with raw"),
    (lambda m, ids, t, k: m(ids[:2], t, k), "3 rows"),
])
def test_bad_text_is_refused(call, match):
    model = tiny()
    text, mask = captions()
    with pytest.raises(ValueError, match=match):
        call(model, masked_ids(), text, mask)


def test_config_round_trip_and_checks():
    cfg = TextENATConfig(**TINY, adaln="pooled")
    assert config_from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["arch"] == "text_enat"
    assert isinstance(build_model(cfg), TextENAT)
    for bad, match in [(dict(adaln="film"), "adaln"), (dict(text_in="all"), "text_in"),
                       (dict(text_len=0), "text_len"), (dict(width=30), "divisible")]:
        with pytest.raises(ValueError, match=match):
            TextENATConfig(**{**TINY, **bad})


def test_parameter_counts_of_variants():
    """ENAT-B text variants (readme table). adaLN costs 16 * 8 * D^2 (+bias); a shared context
    K/V saves 16 * 2 * D^2; without adaLN, shared K/V and the reuse MLP the count is the paper's
    ~116M (Table 5), with them all the ImageNet ENAT-B size."""
    base = TextENATConfig()
    D = base.width
    none = count_parameters(base)
    pooled = count_parameters(TextENATConfig(adaln="pooled"))
    const = count_parameters(TextENATConfig(adaln="constant"))
    shared = count_parameters(TextENATConfig(shared_context_kv=True))
    assert pooled - none == 16 * (8 * D * D + 8 * D)
    assert const - none == 16 * 8 * D
    assert none - shared == 16 * (2 * D * D + 2 * D)
    lean = count_parameters(TextENATConfig(shared_context_kv=True, reuse_projection=False))
    assert abs(lean / 1e6 - 116) < 1.0, lean
    # no unused parameters in the default model: every one gets a gradient
    model = tiny()
    model.train()
    text, mask = captions()
    out = model(masked_ids(), text, mask)
    out2 = model(reveal(masked_ids(), 3), text, mask, prev=out)
    out2.logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_pair_condition_and_prepare_condition():
    from enat_lightning.models.text import TextPrompt

    model = tiny()
    text, mask = captions()
    ids = masked_ids()
    ref = model(ids, text, mask).logits
    assert torch.equal(model(ids, (text, mask)).logits, ref)
    cond, null = model.prepare_condition(TextPrompt(text, mask))
    assert torch.equal(model(ids, cond).logits, ref)
    assert not null.mask.any() and len(null) == 3  # default null: the stored (unset) null condition
    emb, m = torch.randn(T, DT), torch.tensor([True] * 2 + [False] * (T - 2))
    _, null2 = model.prepare_condition(TextPrompt(text, mask, emb, m))
    torch.testing.assert_close(null2.tokens[2], model.text_proj(emb))
    c3, _ = model.prepare_condition((text, mask))
    assert torch.equal(c3.tokens, cond.tokens)
    assert model.prepare_condition(cond)[0] is cond
    with pytest.raises(TypeError, match="TextPrompt"):
        model.prepare_condition(torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("adaln", ["none", "pooled", "constant"])
def test_block_forward_with_cached_text_kv_equals_block(adaln):
    from enat_lightning.models.blocks import Block, modulate, plain_norm
    from enat_lightning.models.text import block_forward, text_block

    torch.manual_seed(1)
    blk = text_block(TextENATConfig(**{**TINY, "adaln": adaln}))
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x, cond, text, ctx = torch.randn(2, 5, 32), torch.randn(2, 32), torch.randn(2, 3, 32), torch.randn(2, 4, 32)
    sh, sc = blk.adaLN_modulation(cond).chunk(Block.n_mod, dim=-1)[2:4]
    text_kv = blk.attn.kv.A(modulate(plain_norm(text), sh, sc))
    mask = torch.tensor([[True, False, True] + [True] * 9, [True] * 12])[:, None, None, :]
    torch.testing.assert_close(block_forward(blk, x, cond, text_kv, ctx, mask),
                               blk(x, cond, ctx=torch.cat([text, ctx], 1), attn_mask=mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block_forward(blk, x, cond, text_kv, None), blk(x, cond, ctx=text), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block_forward(blk, x, cond, None, None), blk(x, cond), atol=1e-5, rtol=1e-5)


def test_text_context_caches_per_block_kv():
    model = tiny(text_in="decoder")
    ctx = model.project_text(*captions())
    assert len(ctx.kv) == 3 and ctx.kv[0] is None and ctx.kv[1] is None and ctx.kv[2].shape == (3, T, 64)
    both = TextContext.cat([ctx, ctx.select(slice(1, 2))])
    assert both.kv[0] is None and torch.equal(both.kv[2][3], ctx.kv[2][1])
    other = tiny(enc_depth=3)
    with pytest.raises(ValueError, match="keys/values for 3 blocks"):
        other(masked_ids(), ctx)
