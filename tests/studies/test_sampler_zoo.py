"""The sampler zoo study: one checkpoint under many SamplerSettings -> table + FID-vs-GFLOPs plot."""
import csv
from pathlib import Path

import pytest
import torch

from enat_lightning.models import ENAT, ENATConfig
from enat_lightning.studies.sampler_zoo import is_zoo_spec, load_zoo, pareto_front, run_zoo

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "experiments" / "studies" / "sampler_zoo.yaml"


def test_the_repository_spec_has_every_order_x_guidance_and_the_skip_variant():
    spec = load_zoo(SPEC)
    assert is_zoo_spec(SPEC)
    combos = {(r.sampler.order, r.sampler.guidance, r.sampler.uncond_skip_steps) for r in spec.rows}
    for order in ("confidence", "random", "halton"):
        for g in ("linear", "constant", "power", "interval"):
            assert (order, g, ()) in combos
        assert (order, "linear", (3, 5, 7)) in combos
    assert len(spec.rows) == 15
    # the base is the demo's sampler (the FIDCallback's `sampler:` in experiments/demo.yaml)
    from enat_lightning.demo.pipeline import config_sampler

    demo = config_sampler(SPEC.parents[1] / "demo.yaml")
    assert demo.cfg_scale == 0.5
    assert all((r.sampler.cfg_scale, r.sampler.mask_temp, r.sampler.samp_temp)
               == (demo.cfg_scale, demo.mask_temp, demo.samp_temp) for r in spec.rows)


def test_pareto_front():
    assert pareto_front([(1, 5), (2, 3), (3, 4), (0.5, 9), (2, 3.5)]) == [True, True, False, True, False]


@pytest.mark.parametrize("text, match", [
    ("kind: sampler_zoo\nbase: {cfg: 3}\n", r"base: unknown sampler settings \['cfg'\]"),
    ("kind: sampler_zoo\norders: [spiral]\n", r"SamplerSettings\.order"),
    ("kind: sampler_zoo\nguidance: {interval: {}}\n", r"guidance\.interval: .*guidance_interval"),
    ("kind: sampler_zoo\nwhat: 1\n", r"unknown key\(s\) \['what'\]"),
    ("kind: sampler_zoo\nevaluation: {samples: 3}\n", r"evaluation: unknown key\(s\) \['samples'\]"),
    ("name: x\n", "not a sampler zoo spec"),
])
def test_bad_specs_name_the_file_and_key(tmp_path, text, match):
    p = tmp_path / "zoo.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_zoo(p)
    assert str(p) in str(e.value)


def test_zoo_runs_on_a_tiny_model(tmp_path):
    from enat_lightning.demo.data import DIGITS, NUM_CLASSES, ensure_demo_data
    from enat_lightning.sampling.checkpoint import save_generator_checkpoint

    torch.manual_seed(0)
    tokenizer = ensure_demo_data(dataset=DIGITS).tokenizer  # the tests' small digits set: 4x4 tokens, 128 codes
    cfg = ENATConfig(codebook_size=DIGITS.codebook_size, num_classes=NUM_CLASSES, grid=DIGITS.grid, width=32, heads=2, enc_depth=2,
                     dec_depth=1)
    net = ENAT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = save_generator_checkpoint(tmp_path / "tiny.ckpt", cfg, net.state_dict())
    spec_path = tmp_path / "zoo.yaml"
    spec_path.write_text(
        "kind: sampler_zoo\nname: tiny_zoo\nbase: {steps: 4, cfg_scale: 2.0}\norders: [confidence, halton]\n"
        "guidance: {linear: {}, interval: {guidance_interval: [1, 2]}}\n"
        "variants: {skip: {uncond_skip_steps: [2]}}\n"
        "rows: [{name: autonat, sampler: {strategy: strat.yaml}}]\n"
        "evaluation: {num_samples: 20, batch_size: 20, time_samples: 4, time_repeats: 1, feature: 'demo:digits',\n"
        f"             ref_stats: 'demo:digits:val', tokenizer: 'demo:{tokenizer}'}}\n")
    (tmp_path / "strat.yaml").write_text("manual_ratios: [0.8, 0.5, 0.2]\nmanual_temp: [1.0, 0.5, 0.2]\n"
                                         "manual_samp_temp: [1.0, 1.0, 1.0, 1.0]\nmanual_cfg: [0.0, 1.0, 2.0, 2.0]\n")
    spec = load_zoo(spec_path)
    assert spec.rows[-1].sampler.strategy == str(tmp_path / "strat.yaml")  # resolved beside the spec
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = run_zoo(spec, tmp_path / "out", ckpt=ckpt)
    finally:
        torch.set_num_threads(threads)
    names = [r["sampler"] for r in rows]
    assert names == ["confidence / linear", "confidence / interval", "halton / linear", "halton / interval",
                     "confidence / linear + skip", "halton / linear + skip", "autonat"]
    by = {r["sampler"]: r for r in rows}
    for r in rows:
        assert r["fid"] > 0 and r["gflops_per_image"] > 0 and r["s_per_image"] > 0 and r["feature"].startswith("demo-classifier")
        assert r["is"] >= 1.0
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1  # fidelity vs diversity columns
    # skipped / interval-limited unconditional passes are cheaper, the study shows it
    assert by["confidence / linear"]["uncond_passes"] == 3 and by["confidence / linear + skip"]["uncond_passes"] == 2
    assert by["confidence / interval"]["uncond_passes"] == 2
    assert by["confidence / linear + skip"]["gflops_per_image"] < by["confidence / linear"]["gflops_per_image"]
    out = tmp_path / "out"
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["sampler"] for r in csv_rows] == names and "pareto" in csv_rows[0]
    assert any(r["pareto"] == "True" for r in csv_rows)
    md = (out / "results.md").read_text()
    assert "FID (demo-classifier" in md and "NOT Inception" in md and "| precision | recall |" in md and md.count("\n| ") == len(rows) + 1
    png = (out / "fid_vs_gflops.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temporary files


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    spec = load_zoo(SPEC)
    with pytest.raises(FileNotFoundError, match="python -m enat_lightning.demo"):
        run_zoo(spec, tmp_path, ckpt=tmp_path / "none.ckpt")
    from enat_lightning import cli

    assert cli.main(["study", "run", str(SPEC), "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path)]) == 2
