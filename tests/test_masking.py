import math

import pytest
import torch
import torch.nn.functional as F

from enat_lightning.masking import (apply_mask, masked_accuracy, masked_ce, num_masked, prepare_labels,
                                    random_positions, sample_mask, sample_mask_ratio, sample_reuse_mask)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mask_ratio_is_beta_12_3_and_reproducible():
    g = gen()
    r = torch.tensor([sample_mask_ratio(g) for _ in range(4000)])
    assert abs(r.mean().item() - 0.8) < 0.01  # Beta(12, 3) mean 12/15
    assert abs(r.var().item() - 12 * 3 / (15**2 * 16)) < 0.002
    assert sample_mask_ratio(gen(5), 2.0, 2.0) == sample_mask_ratio(gen(5), 2.0, 2.0)
    with pytest.raises(ValueError, match="a > 0"):
        sample_mask_ratio(gen(), 0.0, 3.0)


@pytest.mark.parametrize("ratio,expected", [(0.0, 1), (1.0, 15), (0.5, 8), (0.8, 13), (0.03, 1)])
def test_num_masked_is_clamped_round(ratio, expected):
    assert num_masked(16, ratio) == expected


def test_sample_mask_same_count_per_row_and_uniform_positions():
    tokens = torch.zeros(64, 16, dtype=torch.long)
    g = gen()
    counts = torch.zeros(16)
    for _ in range(50):
        m = sample_mask(tokens, 0.25, g)  # (B, L)
        assert m.dtype == torch.bool and m.shape == (64, 16)
        assert (m.sum(1) == 4).all()
        counts += m.float().sum(0)
    freq = counts / (50 * 64)  # each position masked with probability 4/16
    assert (freq - 0.25).abs().max() < 0.05
    assert torch.equal(sample_mask(tokens, 0.5, gen(3)), sample_mask(tokens, 0.5, gen(3)))
    assert not torch.equal(sample_mask(tokens, 0.5, gen(3)), sample_mask(tokens, 0.5, gen(4)))


def test_shards_reproduce_the_global_batch():
    tokens = torch.zeros(6, 16, dtype=torch.long)
    full = sample_mask(torch.zeros(12, 16, dtype=torch.long), 0.6, gen(1))
    for rank in range(2):
        part = sample_mask(tokens, 0.6, gen(1), shard=(rank, 2))
        assert torch.equal(part, full[rank::2])
    labels = torch.arange(12)
    whole = prepare_labels(labels, 0.5, 0.5, 99, gen(2))
    for rank in range(2):
        part = prepare_labels(labels[rank::2], 0.5, 0.5, 99, gen(2), shard=(rank, 2))
        assert torch.equal(part.net, whole.net[rank::2]) and torch.equal(part.data, whole.data[rank::2])
    with pytest.raises(ValueError, match="shard"):
        sample_mask(tokens, 0.5, gen(), shard=(2, 2))


def test_reuse_mask_is_a_superset_with_equal_counts():
    tokens = torch.zeros(8, 16, dtype=torch.long)
    g = gen(7)
    ks = set()
    for _ in range(40):
        m = sample_mask(tokens, 0.5, g)
        prev = sample_reuse_mask(m, g)
        assert (prev | m).eq(prev).all()  # superset: every current [MASK] stays masked
        extra = (prev & ~m).sum(1)
        assert (extra == extra[0]).all() and 0 <= int(extra[0]) <= 8
        ks.add(int(extra[0]))
    assert len(ks) > 3  # k = round(U * #visible) varies with U
    with pytest.raises(ValueError, match="same number of visible"):
        sample_reuse_mask(torch.tensor([[True, False, False], [True, True, False]]), g)


def test_reuse_mask_with_a_fixed_fraction():
    m = sample_mask(torch.zeros(4, 16, dtype=torch.long), 0.5, gen(3))  # 8 visible per row
    for fraction, k in ((0.0, 0), (0.5, 4), (1.0, 8)):
        a, b = gen(5), gen(5)
        prev = sample_reuse_mask(m, a, fraction=fraction)
        assert ((prev & ~m).sum(1) == k).all() and (prev | m).eq(prev).all()
        sample_reuse_mask(m, b)
        assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))  # same stream as a draw
    with pytest.raises(ValueError, match="fraction"):
        sample_reuse_mask(m, gen(), fraction=1.5)


def test_random_positions_respects_eligibility():
    eligible = torch.tensor([[True, False, True, False], [False, True, True, True]])
    m = random_positions((2, 4), 2, gen(), eligible=eligible)
    assert not (m & ~eligible).any() and (m.sum(1) == 2).all()
    with pytest.raises(ValueError, match="eligible"):
        random_positions((2, 4), 3, gen(), eligible=eligible)


def test_masked_ce_matches_official_fixture(official_enat):
    case = official_enat["cases"]["loss"]
    logits = official_enat["cases"][case["logits_from"]]["logits"]  # (B, L, V)
    labels = case["labels"]  # -1 at visible positions
    masking = labels != case["ignore_index"]
    loss = masked_ce(logits, labels.clamp(min=0), masking, case["label_smoothing"])
    assert abs(loss.item() - case["loss"].item()) < 1e-5


def test_masked_ce_ignores_visible_positions_and_layouts_agree():
    g = gen(0)
    logits = torch.randn(3, 16, 10, generator=g)
    targets = torch.randint(10, (3, 16), generator=g)
    masking = sample_mask(targets, 0.5, g)
    ref = masked_ce(logits, targets, masking, 0.1)
    changed = logits.clone()
    changed[~masking] = 1e4 * torch.randn_like(changed[~masking])
    assert torch.equal(masked_ce(changed, targets, masking, 0.1), ref)
    compact = logits[masking].reshape(3, -1, 10)  # (B, Lm, V), the logits_at="masked" layout
    assert torch.allclose(masked_ce(compact, targets, masking, 0.1), ref)
    manual = F.cross_entropy(logits[masking], targets[masking], label_smoothing=0.1)
    assert torch.allclose(ref, manual)
    perfect = F.one_hot(targets, 10).float() * 100
    assert masked_accuracy(perfect, targets, masking) == 1.0


def test_prepare_labels_applies_both_null_sources():
    labels = torch.randint(10, (200_000,), generator=gen())
    out = prepare_labels(labels, 0.15, 0.1, 10, gen(1))
    data_null, net_null = (out.data == 10).float().mean().item(), (out.net == 10).float().mean().item()
    assert abs(data_null - 0.15) < 0.005
    assert abs(net_null - (1 - 0.85 * 0.9)) < 0.005  # 0.235
    assert ((out.data == 10) <= (out.net == 10)).all()  # a data-dropped label stays dropped
    kept = out.net != 10
    assert torch.equal(out.net[kept], labels[kept])
    assert torch.equal(prepare_labels(labels, 0.0, 0.0, 10, gen()).net, labels)
    assert (prepare_labels(labels, 1.0, 0.0, 10, gen()).net == 10).all()
    assert prepare_labels(labels[:4, None], 0.0, 0.0, 10, gen()).net.shape == (4,)
    with pytest.raises(ValueError, match="p_uncond"):
        prepare_labels(labels, 1.5, 0.0, 10, gen())


def test_apply_mask():
    t = torch.arange(6).reshape(2, 3)
    m = torch.tensor([[True, False, False], [False, False, True]])
    assert apply_mask(t, m, 99).tolist() == [[99, 1, 2], [3, 4, 99]]
    assert math.isclose(num_masked(256, 0.8), 205)
