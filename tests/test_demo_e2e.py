"""`make demo` end to end with tiny settings, and the TensorBoard panels a user looks at."""
from __future__ import annotations

import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from enat_lightning.demo import DemoSettings, run_demo

REPO = Path(__file__).resolve().parents[1]


def tags(log_dir: Path) -> dict:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc.Tags()


def test_demo_end_to_end_tiny(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    settings = DemoSettings(eval_samples=60, grid_per_class=2)
    overrides = ["--trainer.max_steps=60", "--trainer.val_check_interval=30",
                 # evaluate and sample inside training too, so every panel appears in a short run
                 "--trainer.callbacks+=enat_lightning.callbacks.fid.FIDCallback",
                 "--trainer.callbacks.ref_stats=demo:val", "--trainer.callbacks.every_n_steps=30",
                 "--trainer.callbacks.num_samples=60", "--trainer.callbacks.sampler.cfg_scale=3.0"]
    results = run_demo(REPO / "experiments" / "demo.yaml", run_dir, settings, overrides)
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "demo_grid.png" in out

    assert (run_dir / "demo_grid.png").is_file()
    saved = json.loads((run_dir / "demo_results.json").read_text())
    assert saved["rows"] == results["rows"]
    rows = {r["reuse"]: r for r in results["rows"]}
    assert set(rows) == {True, False}
    assert rows[True]["gflops_per_image"] < rows[False]["gflops_per_image"]  # reuse saves compute
    for r in rows.values():
        assert r["demo_fid"] > 0 and 0 <= r["accuracy"] <= 1 and r["ms_per_image"] > 0

    run_tags = tags(run_dir)
    for scalar in ("train/loss", "train/acc", "lr", "grad_norm", "tokens/s", "samples/s", "val/loss",
                   "eval/fid", "eval/accuracy", "flops/gmacs_total"):
        assert scalar in run_tags["scalars"], f"{scalar} missing from TensorBoard"
    assert run_tags["images"], "no image grid logged during training"
    assert any("config" in t for t in run_tags["tensors"]), "resolved config not logged as text"
    eval_tags = tags(run_dir / "demo_eval")
    assert "demo/class_grid" in eval_tags["images"]


def test_demo_resumes_a_finished_run_without_retraining(tmp_path):
    run_dir = tmp_path / "demo"
    settings = DemoSettings(eval_samples=20, grid_per_class=1)
    first = run_demo(REPO / "experiments" / "demo.yaml", run_dir, settings, ["--trainer.max_steps=10"])
    second = run_demo(REPO / "experiments" / "demo.yaml", run_dir, settings, ["--trainer.max_steps=10"])
    assert first["checkpoint"] == second["checkpoint"]
