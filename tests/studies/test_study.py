"""Studies: spec parsing, config composition, results table, and one tiny end-to-end run on the demo data."""
import csv
from pathlib import Path

import pytest
import torch
from analysis_helpers import trained_demo_nat as _train_demo_nat

from enat_lightning.studies.sampler_zoo import is_zoo_spec
from enat_lightning.studies.study import (find_studies_for, load_study, run_study,
                                           sample_quality_metric, slug, study_for_path, write_results)

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted(p for p in (REPO / "experiments" / "studies").glob("*.yaml")
                 if p.name != "demo_tiny.yaml" and not is_zoo_spec(p))  # the sampler zoo trains nothing


def test_the_paper_studies_exist():
    assert {p.stem for p in STUDIES} >= {"fig2_attention_removal", "table1_disentangled", "table2_allocation",
                                         "table6a_main", "table6_ablations"}


@pytest.mark.parametrize("spec", STUDIES, ids=lambda p: p.stem)
def test_every_study_spec_parses_and_names_existing_configs(spec):
    st = load_study(spec)
    assert st.rows and st.metrics
    for row in st.rows:
        assert all(c.is_file() for c in [*st.base, *row.configs])
        assert set(row.paper) <= set(st.metrics), row.name  # every paper number has a column
        assert row.paper  # the point of a study: the paper's number beside ours
    assert len({slug(r.name) for r in st.rows}) == len(st.rows)


def test_fig2_numbers_are_the_papers():
    st = load_study(REPO / "experiments/studies/fig2_attention_removal.yaml")
    assert [r.paper["fid"] for r in st.rows] == [6.54, 201.88, 6.76, 7.40, 7.05]


def test_an_ablation_yaml_runs_its_row_and_the_reference_row():
    st = study_for_path(REPO / "experiments/ablations/fig2_a_no_mask_to_visible.yaml")
    assert [r.name for r in st.rows] == ["baseline (full attn.)", "w/o [M] to [V]"]
    assert find_studies_for(REPO / "experiments/ablations/table6c_no_reuse_proj.yaml")[0][0].name == "table6_ablations"


def test_spec_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("rows: [{name: a, configs: [nowhere.yaml]}]\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_study(bad)
    bad.write_text("metrics: [fidd]\nrows: [{name: a}]\n")
    with pytest.raises(ValueError, match=r"s\.yaml.*fidd"):
        load_study(bad)
    bad.write_text("model: {}\n")
    with pytest.raises(ValueError, match="no spec under experiments/studies/ lists it"):
        study_for_path(bad)


def test_sample_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="--fid-stats, --tokenizer, --inception"):
        sample_quality_metric("fid", num_samples=10)
    with pytest.raises(ValueError, match="'demo-fid' or 'fid'"):
        sample_quality_metric("kid", num_samples=10)


def test_results_table_shape(tmp_path):
    st = load_study(REPO / "experiments/studies/table2_allocation.yaml")
    rows = [{"row": r.name, "gflops_ours": 1.0, "gflops_paper": r.paper["gflops"], "fid_ours": float("nan"),
             "fid_paper": r.paper["fid"], "masked_loss_ours": 2.0, "checkpoint": "x"} for r in st.rows]
    paths = write_results(st, rows, tmp_path)
    lines = paths["md"].read_text().splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert table[0] == "| row | GFLOPs (ours) | GFLOPs (paper) | FID (ours) | FID (paper) | masked loss (ours) |"
    assert len(table) == 2 + 3 and "| 12/4 | 1.000 | 38.200 | n/a | 4.980 | 2.000 |" in table
    assert len(list(csv.DictReader(open(paths["csv"])))) == 3


def test_demo_study_end_to_end(tmp_path, trained_demo_nat):
    """Two Fig. 2 rows trained briefly with Lightning on the demo digits, evaluated (masked loss, demo-FID),
    tabulated beside the paper's FIDs; a second run reuses the checkpoints. Then the inference-time Fig. 2
    table of a briefly trained NAT checkpoint: cutting [M]->[V] hurts the masked loss far more than [V]->[M]."""
    from enat_lightning.demo.data import ensure_demo_data

    demo = ensure_demo_data(dataset="digits")
    st = load_study(REPO / "experiments/studies/fig2_attention_removal.yaml")
    st.rows = st.rows[:2]
    sets = ["trainer.max_steps=25", "model.net.init_args.width=32", "model.net.init_args.depth=2",
            "model.warmup_steps=0", f"data.init_args.train_shards={demo.train}",
            f"data.init_args.val_shards={demo.val}"]
    metric = sample_quality_metric("demo-fid", num_samples=20, steps=4, cfg_scale=1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = run_study(st, tmp_path, overrides=[REPO / "experiments/studies/demo_tiny.yaml"], sets=sets,
                         sample_metric=metric, val_limit=128)
        table = [ln for ln in (tmp_path / "results.md").read_text().splitlines() if ln.startswith("|")]
        ckpts = [Path(r["checkpoint"]) for r in rows]
        stamps = [p.stat().st_mtime_ns for p in ckpts]
        again = run_study(st, tmp_path, overrides=[REPO / "experiments/studies/demo_tiny.yaml"], sets=sets,
                          val_limit=128)
    finally:
        torch.set_num_threads(threads)
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps  # resumed: nothing retrained
    assert [r["row"] for r in rows] == ["baseline (full attn.)", "w/o [M] to [V]"]
    assert [r["fid_paper"] for r in rows] == [6.54, 201.88]
    for r in rows:
        assert 0 < r["masked_loss_ours"] < 6 and r["demo_fid_ours"] > 0 and 0 <= r["accuracy_ours"] <= 1
    assert [r["masked_loss_ours"] for r in again] == [r["masked_loss_ours"] for r in rows]
    from enat_lightning.sampling.checkpoint import load_generator

    net, cfg = load_generator(ckpts[1])
    assert cfg.attention_removal == "mask_to_visible" and cfg.width == 32 and cfg.grid == 4
    assert table[0].startswith("| row | FID (ours) | FID (paper) | masked loss (ours) | demo-FID (ours)")
    assert len(table) == 4

    # inference-time Fig. 2 on a checkpoint of the shared briefly trained demo NAT
    from enat_lightning.analysis.attention_removal import analyze_attention_removal
    from enat_lightning.sampling.checkpoint import save_generator_checkpoint

    trained, _, _, beta = trained_demo_nat
    ckpt = save_generator_checkpoint(tmp_path / "nat.ckpt", trained.cfg, trained.state_dict())
    cut = {r["removal"]: r for r in analyze_attention_removal(ckpt, tmp_path / "cut", removals=["mask_to_visible",
                                                               "visible_to_mask"], mask_ratio_beta=beta)}
    assert cut["mask_to_visible"]["delta_masked_loss"] > 0.1
    assert cut["mask_to_visible"]["delta_masked_loss"] > 5 * max(cut["visible_to_mask"]["delta_masked_loss"], 0.01)
    md = [ln for ln in (tmp_path / "cut" / "attention_removal.md").read_text().splitlines() if ln.startswith("|")]
    assert md[0] == "| removal | masked_loss | delta_masked_loss | masked_acc |" and len(md) == 2 + 3


@pytest.mark.slow
@pytest.mark.parametrize("spec", STUDIES, ids=lambda p: p.stem)
def test_every_study_runs_on_the_demo_data(spec, tmp_path):
    """Each paper study end to end at toy scale: every row trains (a few steps), evaluates and lands in
    the table with its paper numbers (minutes in total, hence slow)."""
    from enat_lightning.demo.data import ensure_demo_data

    demo = ensure_demo_data(dataset="digits")
    st = load_study(spec)
    sets = ["trainer.max_steps=3", "model.net.init_args.width=32", "model.warmup_steps=0",
            f"data.init_args.train_shards={demo.train}", f"data.init_args.val_shards={demo.val}"]
    metric = sample_quality_metric("demo-fid", num_samples=10, steps=3, cfg_scale=1.0)
    rows = run_study(st, tmp_path, overrides=[REPO / "experiments/studies/demo_tiny.yaml"], sets=sets,
                     sample_metric=metric, val_limit=64)
    assert [r["row"] for r in rows] == [r.name for r in st.rows]
    for r, row in zip(rows, st.rows):
        for m in st.metrics:
            assert r[f"{m}_paper"] == row.paper[m]
        if "gflops" in st.metrics:
            assert r["gflops_ours"] > 0
        assert r["masked_loss_ours"] > 0 and r["demo_fid_ours"] > 0
    assert len([ln for ln in (tmp_path / "results.md").read_text().splitlines() if ln.startswith("|")]) == 2 + len(rows)


@pytest.fixture
def trained_demo_nat():
    return _train_demo_nat()


def test_analysis_modules_import_neither_lightning_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys, enat_lightning.analysis.similarity, enat_lightning.analysis.attention_maps, "
            "enat_lightning.analysis.attention_removal, enat_lightning.analysis.tokens, "
            "enat_lightning.studies.study, enat_lightning.analysis.report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
