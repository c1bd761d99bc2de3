"""Feature similarity across sampling steps (paper Fig. 5): math, per-layer capture, outputs."""
import csv

import pytest
import torch

from enat_lightning.analysis.similarity import (GROUPS, adjacent_similarity, group_means, record_layer_features,
                                                run_similarity, token_cosine, transition_groups,
                                                write_similarity_outputs)
from enat_lightning.models import ENAT, NAT, ENATConfig, NATConfig
from enat_testing import perturbed

V = 32



def tiny_nat():
    return perturbed(NAT(NATConfig(codebook_size=V, num_classes=5, grid=4, width=32, heads=4, depth=2)))


def tiny_enat(**kw):
    return perturbed(ENAT(ENATConfig(codebook_size=V, num_classes=5, grid=4, width=32, heads=4, enc_depth=2,
                                     dec_depth=1, **kw)))


def test_token_cosine_matches_torch_and_handles_zero():
    a, b = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    torch.testing.assert_close(token_cosine(a, b), torch.nn.functional.cosine_similarity(a, b, dim=-1))
    assert token_cosine(a, 2.5 * a).sub(1).abs().max() < 1e-6
    assert token_cosine(torch.zeros(4), torch.ones(4)).item() == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        token_cosine(a, b[:, :2])


def test_transition_groups_partition_positions():
    M = 9
    ids = torch.tensor([[[M, M, M, M]], [[1, M, M, M]], [[1, 2, M, 3]]])  # (S=3, B=1, L=4)
    g = transition_groups(ids, M)  # (P=2, G, B, L)
    assert g.shape == (2, 3, 1, 4)
    assert bool((g.sum(1) == 1).all())  # exactly one group per position
    assert g[0, 0, 0].tolist() == [True, False, False, False]  # newly revealed 1->2
    assert g[0, 2, 0].tolist() == [False, True, True, True]
    assert g[1, 0, 0].tolist() == [False, True, False, True]
    assert g[1, 1, 0].tolist() == [True, False, False, False]  # previously visible
    with pytest.raises(ValueError, match="became \\[MASK\\] again"):
        transition_groups(ids.flip(0), M)


def test_group_means_ignore_nan_and_empty_groups():
    sim = torch.tensor([[[0.5, 1.0, float("nan"), 0.0]]])  # (P=1, B=1, L=4)
    groups = torch.tensor([[[[True, False, False, False]], [[False, False, False, False]],
                            [[False, True, True, True]]]])  # (1, 3, 1, 4)
    means, counts = group_means(sim, groups)
    assert counts.tolist() == [[1, 0, 2]]
    assert means[0, 0].item() == 0.5 and means[0, 2].item() == 0.5
    assert torch.isnan(means[0, 1])


def test_adjacent_similarity_shape():
    f = torch.randn(4, 2, 16, 8)
    assert adjacent_similarity(f).shape == (3, 2, 16)


def test_nat_similarity_is_polarised_like_fig5():
    """Visible tokens never change and a NAT is deterministic per input, so only positions whose input
    changed (newly revealed) can move much; masked positions move only through attention."""
    res = run_similarity(tiny_nat(), [0, 1, 2], steps=6, layers="all", generator=torch.Generator().manual_seed(0),
                         cfg_scale=1.0)
    assert res.layers == ["block0", "block1", "final"]
    assert res.sim.shape == (3, 5, 3, 16)
    new, prev, still = (res.means[-1, :, g] for g in range(3))
    assert bool((new < 0.95).all())
    assert bool((prev[1:] > 0.98).all()) and torch.isnan(prev[0])  # nothing visible at step 1
    assert bool((still > 0.98).all())
    # the final features of a NAT are the last block's output
    torch.testing.assert_close(res.sim[-1], res.sim[-2], equal_nan=True)
    assert res.counts[-1].sum(1).tolist() == [3 * 16] * 5


def test_enat_per_layer_positions_and_reuse():
    model = tiny_enat()
    res = run_similarity(model, [0, 1], steps=5, layers="all", generator=torch.Generator().manual_seed(1),
                         reuse=False)
    enc0, dec0 = res.layers.index("enc0"), res.layers.index("dec0")
    # without reuse the encoder recomputes previously visible tokens; it never sees [MASK] tokens
    assert res.counts[enc0, 1:, GROUPS.index("previously_visible")].min() > 0
    assert res.counts[enc0, :, GROUPS.index("still_masked")].sum() == 0
    # the decoder only sees [MASK] tokens: defined for still-masked positions only
    assert res.counts[dec0, :, GROUPS.index("previously_visible")].sum() == 0
    assert res.counts[dec0, :, GROUPS.index("still_masked")].min() > 0
    with_reuse = run_similarity(model, [0, 1], steps=5, layers="all", generator=torch.Generator().manual_seed(1))
    # with reuse the encoder only encodes newly revealed tokens, so it never covers one position twice
    assert with_reuse.counts[enc0].sum() == 0
    assert with_reuse.counts[-1].sum() == 4 * 2 * 16


def test_hooks_are_removed_and_features_match_trace():
    model = tiny_nat()
    ids = torch.full((2, 16), V)
    ids[:, :5] = 3
    with record_layer_features(model) as rec:
        out = model(ids, torch.tensor([0, 1]))
    assert len(rec.calls) == 1 and rec.calls[0].shape == (2, 2, 16, 32)
    torch.testing.assert_close(rec.calls[0][-1], out.feat)
    assert not model._forward_hooks and not any(b._forward_hooks for b in model.blocks)


def test_outputs_csv_png_and_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    res = run_similarity(tiny_nat(), [0, 1], steps=4, generator=torch.Generator().manual_seed(0))
    writer = SummaryWriter(str(tmp_path / "tb"))
    paths = write_similarity_outputs(res, tmp_path / "out", logger=writer)
    writer.close()
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 3 * 3  # pairs x groups, one layer
    assert {r["group"] for r in rows} == set(GROUPS)
    assert rows[0]["pair"] == "1->2"
    for key in ("maps", "means"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "similarity/final/newly_revealed" in acc.Tags()["scalars"]
    assert "similarity/maps" in acc.Tags()["images"]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps >= 2"):
        run_similarity(tiny_nat(), [0], steps=1)
    with pytest.raises(ValueError, match="'final' or 'all'"):
        run_similarity(tiny_nat(), [0], layers="some")


def test_a_lightning_tensorboard_logger_works_as_well(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="sim", version="")
    res = run_similarity(tiny_nat(), [0], steps=3, generator=torch.Generator().manual_seed(0))
    write_similarity_outputs(res, tmp_path / "out", logger=logger)
    logger.finalize("success")
    assert list((tmp_path / "sim").glob("events.out.tfevents.*"))


def test_seeded_batches_cut_labels_and_seed_each_batch():
    from enat_lightning.analysis.similarity import seeded_batches

    batches = list(seeded_batches(torch.arange(5), 2, seed=7))
    assert [yb.tolist() for yb, _ in batches] == [[0, 1], [2, 3], [4]]
    for b, (_, g) in enumerate(batches):
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(7 + b)))
