"""The sampler: official generate fixture, batching / reuse / randomness invariants, NAT path."""
import pytest
import torch

from enat_testing import perturbed, tolerance
from enat_lightning.models import ENAT, NAT, ENATConfig, NATConfig, from_official
from enat_lightning.sampling import generate
from enat_lightning.sampling.schedules import masked_counts

TINY = dict(codebook_size=32, num_classes=5, grid=4, width=32, heads=4)



@pytest.fixture(scope="module")
def tiny_enat():
    torch.manual_seed(0)
    return perturbed(ENAT(ENATConfig(**TINY, enc_depth=2, dec_depth=1)))


@pytest.fixture(scope="module")
def official_model(official_enat):
    return from_official(official_enat["config"], official_enat["state_dict"])


LABELS = torch.tensor([0, 3, 4])
KW = dict(steps=4, cfg_scale=2.0, mask_temp=1.0, samp_temp=1.0)


def test_official_generate_fixture_exactly(official_model, official_enat):
    case = official_enat["cases"]["generate"]
    assert case["null_label"] == official_model.cfg.num_classes
    ids, trace = generate(official_model, case["labels"], steps=case["steps"], cfg_scale=case["cfg_scale"],
                          mask_temp=case["mask_temp"], samp_temp=case["samp_temp"],
                          generator=torch.Generator().manual_seed(123), return_trace=True, trace_logits=True)
    assert torch.equal(ids, case["final_ids"])
    assert torch.equal(trace.stack("input_ids"), case["step_input_ids"])
    for name in ("cond_logits", "uncond_logits"):
        ref = case[f"step_{name}"]
        assert (trace.stack(name) - ref).abs().max() <= tolerance(ref)
    assert [s.cfg_weight for s in trace.steps] == pytest.approx(case["cfg_scale_per_step"])
    assert [s.num_masked for s in trace.steps] == case["num_masked_input_per_step"]
    assert [s.had_prev for s in trace.steps] == case["step_had_prev"]


def test_fast_path_gives_the_fixture_ids_too(official_model, official_enat):
    # masked-only head, batched passes, step-0 uncond skipped: same tokens as the reference trace
    case = official_enat["cases"]["generate"]
    ids = generate(official_model, case["labels"], steps=4, cfg_scale=2.0, mask_temp=0.0, samp_temp=1e-6)
    assert torch.equal(ids, case["final_ids"])


def test_trace_shapes_and_visible_tokens_never_change(tiny_enat):
    ids, trace = generate(tiny_enat, LABELS, **KW, generator=torch.Generator().manual_seed(0), return_trace=True)
    assert ids.shape == (3, 4, 4) and ids.dtype == torch.long and int(ids.max()) < 32
    mask_id = tiny_enat.cfg.mask_id
    for a, b in zip(trace.steps, trace.steps[1:]):
        visible = a.input_ids != mask_id
        assert torch.equal(b.input_ids[visible], a.input_ids[visible])  # never edited
        assert torch.equal(a.sampled_ids[visible], a.input_ids[visible])
        assert torch.equal(b.input_ids[b.input_ids != mask_id], a.sampled_ids[b.input_ids != mask_id])
    last = trace.steps[-1]
    assert torch.equal(ids.reshape(3, -1), last.sampled_ids)
    assert [s.num_masked for s in trace.steps] == masked_counts(16, 4)[:4]
    assert [int((s.input_ids == mask_id).sum(1)[0]) for s in trace.steps] == [s.num_masked for s in trace.steps]
    s = trace.steps[1]
    assert s.cond_feat.shape == (3, 16, 32) and s.confidence.shape == (3, 16)
    assert torch.isinf(s.confidence[s.input_ids != mask_id]).all()
    assert torch.isfinite(s.confidence[s.input_ids == mask_id]).all()
    assert s.cond_logits is None  # only with trace_logits


def test_same_generator_same_result_different_seed_differs(tiny_enat):
    a = generate(tiny_enat, LABELS, **KW, generator=torch.Generator().manual_seed(5))
    b = generate(tiny_enat, LABELS, **KW, generator=torch.Generator().manual_seed(5))
    c = generate(tiny_enat, LABELS, **KW, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _unbatched_reference(model, labels, steps, cfg_scale):
    """Separate cond / uncond forwards with full logits, greedy (temps at 0 / floor)."""
    cfg = model.cfg
    B, L, mask_id = len(labels), cfg.seq_len, cfg.mask_id
    counts = masked_counts(L, steps)
    ids = torch.full((B, L), mask_id)
    prev_c = prev_u = None
    w = 0.0
    with torch.no_grad():
        for s in range(steps):
            out_c = model(ids, labels, prev=prev_c)
            out_u = model(ids, torch.full_like(labels, cfg.num_classes), prev=prev_u)
            prev_c, prev_u = out_c, out_u
            logp = torch.log_softmax(out_c.logits + w * (out_c.logits - out_u.logits), -1)
            conf, tok = logp.max(-1)
            masked = ids == mask_id
            sampled = torch.where(masked, tok, ids)
            conf = torch.where(masked, conf, torch.full_like(conf, float("inf")))
            ids = sampled.scatter(1, torch.argsort(conf, dim=1, stable=True)[:, :counts[s + 1]], mask_id)
            w = (s + 1) / steps * cfg_scale
    return sampled.reshape(B, cfg.grid, cfg.grid)


def test_batched_passes_equal_separate_passes(tiny_enat):
    ref = _unbatched_reference(tiny_enat, LABELS, 4, 3.0)
    got, trace = generate(tiny_enat, LABELS, steps=4, cfg_scale=3.0, mask_temp=0.0, samp_temp=1e-6,
                          return_trace=True, trace_logits=True)
    assert torch.equal(got, ref)
    # and the batched uncond logits equal an unbatched uncond forward with its own reuse chain
    prev = None
    null = torch.full_like(LABELS, 5)
    with torch.no_grad():
        for s in trace.steps:
            out = tiny_enat(s.input_ids, null, prev=prev)
            assert (out.logits - s.uncond_logits).abs().max() < 1e-4
            prev = out


def test_cfg_zero_runs_no_unconditional_pass(tiny_enat):
    calls = []
    handle = tiny_enat.register_forward_hook(lambda m, args, kw: calls.append(args[0].shape[0]))
    try:
        generate(tiny_enat, LABELS, steps=4, cfg_scale=0.0)
        assert calls == [3, 3, 3, 3]
        calls.clear()
        generate(tiny_enat, LABELS, steps=4, cfg_scale=1.0)
        assert calls == [3, 6, 6, 6]  # step 0 is unguided and nothing is visible yet: skipped
    finally:
        handle.remove()


def test_reuse_false_passes_no_prev_and_changes_result(tiny_enat):
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    ids_r, tr_r = generate(tiny_enat, LABELS, **KW, generator=g(), return_trace=True)
    ids_n, tr_n = generate(tiny_enat, LABELS, **KW, generator=g(), reuse=False, return_trace=True)
    assert [s.had_prev for s in tr_r.steps] == [False, True, True, True]
    assert not any(s.had_prev for s in tr_n.steps)
    # step 1 reuses an all-masked step (nothing to reuse): identical; from step 2 on the encoder
    # reads f(previous features), so the features differ
    assert torch.equal(tr_r.steps[1].cond_feat, tr_n.steps[1].cond_feat)
    assert torch.equal(tr_r.steps[2].input_ids, tr_n.steps[2].input_ids)
    assert not torch.allclose(tr_r.steps[2].cond_feat, tr_n.steps[2].cond_feat)


def test_nat_model_path():
    torch.manual_seed(0)
    nat = perturbed(NAT(NATConfig(**TINY, depth=2)))
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    a = generate(nat, LABELS, **KW, generator=g())
    b = generate(nat, LABELS, **KW, generator=g(), reuse=False)
    assert a.shape == (3, 4, 4) and torch.equal(a, b)  # NAT ignores prev


def test_training_mode_is_restored_and_labels_checked(tiny_enat):
    tiny_enat.train()
    try:
        a = generate(tiny_enat, LABELS, **KW, generator=torch.Generator().manual_seed(3))
        assert tiny_enat.training
    finally:
        tiny_enat.eval()
    assert torch.equal(a, generate(tiny_enat, LABELS, **KW, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        generate(tiny_enat, torch.tensor([6]), steps=2)
    with pytest.raises(ValueError, match=">= 0"):
        generate(tiny_enat, LABELS, steps=2, cfg_scale=-1.0)


def test_other_schedules_run(tiny_enat):
    for sched in ("linear", "square", [0.75, 0.25, 0.0]):
        steps = 3 if isinstance(sched, list) else 4
        ids, tr = generate(tiny_enat, LABELS, steps=steps, schedule=sched, return_trace=True)
        assert [s.num_masked for s in tr.steps] == masked_counts(16, steps, sched)[:steps]
        assert int(ids.max()) < 32


def test_modulation_is_computed_once_per_condition_and_changes_nothing(tiny_enat):
    """generate caches every block's adaLN output in its conditions (the cond rows, and the 2B
    cond+null rows): one computation per block and condition instead of one per step."""
    from unittest import mock

    from enat_lightning.models.conditioning import Condition

    blocks = [*tiny_enat.encoder, *tiny_enat.decoder]
    calls = []
    hooks = [b.adaLN_modulation.register_forward_hook(lambda *a: calls.append(1)) for b in blocks]
    kw = dict(steps=6, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    try:
        cached = generate(tiny_enat, LABELS, **kw)
        n_cached = len(calls)
        calls.clear()
        kw["generator"] = torch.Generator().manual_seed(0)
        with mock.patch.object(Condition, "caching_modulation", lambda self: self):
            uncached = generate(tiny_enat, LABELS, **kw)
    finally:
        for h in hooks:
            h.remove()
    # step 0 (unguided, nothing visible: the decoder only) on the cond rows, then every block once
    # on the cond+null rows; without the cache every block at every later step
    assert n_cached == 1 + len(blocks)
    assert len(calls) == 1 + 5 * len(blocks)
    assert torch.equal(cached, uncached)


def test_a_cached_condition_is_not_used_while_gradients_are_recorded(tiny_enat):
    cond = tiny_enat.prepare_condition(LABELS).caching_modulation()
    blk = tiny_enat.encoder[0]
    with torch.enable_grad():
        assert cond.modulation(0, blk) is None and cond.modulation_cache == {}
    with torch.no_grad():
        first = cond.modulation(0, blk)
        assert cond.modulation(0, blk) is first  # computed once, then read
        assert torch.equal(first, blk.adaLN_modulation(cond.vector))
    assert tiny_enat.prepare_condition(LABELS).modulation(0, blk) is None  # no cache unless asked
