"""Inference-time attention removal (paper Fig. 2b): the cut list, the cut network, the removal study."""
import pytest
from analysis_helpers import tiny_enat
from analysis_helpers import trained_demo_nat as _train_demo_nat

from enat_lightning.analysis.attention_removal import AttentionCut, removal_list, removal_study
from enat_lightning.analysis.report import markdown_table


def test_removal_list_and_errors():
    assert removal_list("all") == ["mask_to_visible", "visible_to_mask", "visible_to_visible", "mask_to_mask"]
    assert removal_list("mask_to_mask, visible_to_mask") == ["mask_to_mask", "visible_to_mask"]
    with pytest.raises(ValueError, match="mask_to_nowhere"):
        removal_list("mask_to_nowhere")
    with pytest.raises(ValueError, match="needs a NAT"):
        AttentionCut(tiny_enat(), "mask_to_visible")


def test_markdown_table():
    md = markdown_table([{"a": "x", "b": 1.0}, {"a": "y", "b": float("nan")}])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| x | 1.0000 |", "| y | n/a |"]


def test_inference_cut_mask_to_visible_hurts_most(trained_demo_nat):
    """Paper Fig. 2: [MASK] queries reading visible keys is the interaction that matters; visible tokens
    reading [MASK] tokens barely does."""
    net, va, yva, beta = trained_demo_nat
    calls = []
    rows = removal_study(net, va, yva, removal_list("all"), mask_ratio_beta=beta,
                         sample_metric=lambda m: calls.append(m.removal) or {"calls": len(calls)})
    by = {r["removal"]: r for r in rows}
    assert [r["removal"] for r in rows] == ["none", "mask_to_visible", "visible_to_mask", "visible_to_visible",
                                            "mask_to_mask"]
    assert calls == [r["removal"] for r in rows]
    assert by["none"]["delta_masked_loss"] == 0.0
    assert by["none"]["masked_loss"] < 4.0  # learned something (log 128 = 4.85)
    hurt_mv = by["mask_to_visible"]["delta_masked_loss"]
    assert hurt_mv > 0.1
    assert hurt_mv > 5 * max(by["visible_to_mask"]["delta_masked_loss"], 0.01)
    assert by["mask_to_visible"]["masked_acc"] < by["none"]["masked_acc"]
    assert all(hurt_mv > by[r]["delta_masked_loss"] for r in ("visible_to_mask", "visible_to_visible", "mask_to_mask"))


@pytest.fixture
def trained_demo_nat():
    return _train_demo_nat()
