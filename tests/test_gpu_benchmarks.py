"""benchmarks/gpu_train.py and gpu_sample.py: refuse cleanly without CUDA, run their CPU smoke mode,
and the memory table of docs/scaling.md comes from the configs."""
import importlib.util
import json

import pytest
import torch

from enat_testing import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("name", ["gpu_train", "gpu_sample"])
def test_without_cuda_they_refuse_in_one_line(name, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the refusal cannot be shown")
    assert _load(name).main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a CUDA GPU" in err and "--smoke" in err


def test_train_smoke_reports_ours_beside_the_official_pattern(tmp_path):
    assert _load("gpu_train").main(["--smoke", "--json", str(tmp_path / "t.json")]) == 0
    row = json.loads((tmp_path / "t.json").read_text())["rows"][0]
    for case in ("ours", "official_pattern"):
        assert row[case]["img_per_s"] > 0 and row[case]["mfu"] is None  # no CPU peak: no MFU
    assert row["speedup"] == pytest.approx(row["ours"]["img_per_s"] / row["official_pattern"]["img_per_s"])
    assert row["train_flops_per_sample"] > 0


def test_sample_smoke_reports_reuse_and_the_official_pattern(tmp_path):
    assert _load("gpu_sample").main(["--smoke", "--json", str(tmp_path / "s.json")]) == 0
    row = json.loads((tmp_path / "s.json").read_text())["rows"][0]
    assert {"ours_reuse", "ours_no_reuse", "official_pattern_reuse"} <= set(row)
    assert all(row[k]["img_per_s"] > 0 for k in ("ours_reuse", "ours_no_reuse", "official_pattern_reuse"))


def test_memory_table_is_computed_from_the_configs(capsys):
    from enat_lightning.evaluation.flops import build_meta
    from enat_lightning.models import preset
    from enat_lightning.sharding import training_memory

    assert _load("gpu_train").main(["--memory-table"]) == 0
    table = capsys.readouterr().out
    cfg = preset("enat-l")
    params = sum(p.numel() for p in build_meta(cfg).parameters())
    ddp, fsdp = (training_memory(cfg, 256, 8, sharded=s) for s in (False, True))
    assert ddp["params"] == params and ddp["adamw"] == 8 * params and fsdp["adamw"] == params  # 8 B/param over 8
    assert fsdp["activations"] == ddp["activations"] and fsdp["total"] < ddp["total"]
    assert f"| ENAT-L | {params / 1e6:.1f}M | DDP |" in table and f"{ddp['total'] / 2**30:.2f} |" in table
    assert len([line for line in table.splitlines() if line.startswith("| ENAT-")]) == 6
