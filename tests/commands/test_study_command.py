"""`enat study plan|run` argument handling (the training pipeline itself: tests/analysis/test_study.py)."""
from pathlib import Path

from enat_lightning.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_plan_lists_rows_with_their_fit_commands(capsys):
    rc = main(["study", "plan", str(REPO / "experiments/ablations/table2_15_1.yaml"),
               "--override", "experiments/studies/demo_tiny.yaml", "--set", "trainer.max_steps=10"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = [ln for ln in out.splitlines() if ln.startswith("- ")]
    assert [ln.split(":")[0] for ln in lines] == ["- 8/8", "- 15/1"]  # the reference row and the ablation's row
    assert "table2_15_1.yaml -c experiments/studies/demo_tiny.yaml + overrides trainer.max_steps=10" in lines[1]
    assert "'fid': 4.78" in lines[1]
    assert "runs/studies/table2_allocation/15_1/final.ckpt (to train)" in lines[1]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["study", "plan", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml does not exist" in capsys.readouterr().err
    spec = REPO / "experiments/studies/fig2_attention_removal.yaml"
    assert main(["study", "plan", str(spec), "--rows", "nope"]) == 2
    assert "--rows ['nope']" in capsys.readouterr().err
    assert main(["study", "run", str(spec), "--set", "trainer.max_steps", "--out", str(tmp_path)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
