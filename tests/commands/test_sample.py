"""`enat sample` end to end on the tiny official ENAT (imported) and the tiny VQGAN."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from enat_lightning.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory, official_enat, official_vqgan):
    d = tmp_path_factory.mktemp("sample_cli")
    torch.save(official_enat["state_dict"], d / "nnet_ema.pth")
    assert main(["import-official", "--nnet", str(d / "nnet_ema.pth"), "--official-config",
                 json.dumps(official_enat["config"]), "--out", str(d / "tiny.ckpt")]) == 0
    torch.save({k: v.float() for k, v in official_vqgan["state_dict"].items()}, d / "vq.pt")
    tok = json.dumps({"class_path": "enat_lightning.tokenizers.VQGAN",
                      "init_args": {"path": str(d / "vq.pt"), "config": official_vqgan["config"]}})
    return d, tok


def test_sample_from_imported_checkpoint_writes_a_viewable_grid(files, tmp_path, capsys):
    d, tok = files
    rc = main(["sample", "--ckpt", str(d / "tiny.ckpt"), "--labels", "1,2,3", "--per-class", "2", "--steps", "4",
               "--batch-size", "4", "--tokenizer", tok, "--out", str(tmp_path / "s"), "--save-images",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "6 samples on cpu" in out and "grid:" in out
    img = Image.open(tmp_path / "s" / "grid.png")
    img.load()
    assert img.mode == "RGB" and min(img.size) >= 64
    with np.load(tmp_path / "s" / "samples.npz") as z:
        assert z["arr_0"].shape == (6, 64, 64, 3) and z["labels"].tolist() == [1, 1, 2, 2, 3, 3]
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 6
    # rerun = resume: every chunk already there, same result
    rc = main(["sample", "--ckpt", str(d / "tiny.ckpt"), "--labels", "1,2,3", "--per-class", "2", "--steps", "4",
               "--batch-size", "4", "--tokenizer", tok, "--out", str(tmp_path / "s"), "--no-progress"])
    assert rc == 0 and "(2 chunks resumed)" in capsys.readouterr().out


def test_config_plus_official_weights_equals_checkpoint(files, tmp_path, official_enat, capsys):
    from enat_lightning.models import config_from_official

    d, _ = files
    from enat_lightning.sampling.checkpoint import net_to_yaml_form

    net = net_to_yaml_form(config_from_official(official_enat["config"]))  # a training config naming the network
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"model": {"net": net}}))
    common = ["--labels", "4,5", "--steps", "4", "--seed", "3", "--no-progress"]
    assert main(["sample", "-c", str(tmp_path / "tiny.yaml"), "--official-weights", str(d / "nnet_ema.pth"),
                 "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["sample", "--ckpt", str(d / "tiny.ckpt"), "--out", str(tmp_path / "b"), *common]) == 0
    assert "token ids only" in capsys.readouterr().out
    with np.load(tmp_path / "a" / "samples.npz") as a, np.load(tmp_path / "b" / "samples.npz") as b:
        assert np.array_equal(a["tokens"], b["tokens"]) and "arr_0" not in a.files


@pytest.mark.parametrize("argv, msg", [
    (["--labels", "1"], "give either --ckpt or --preset / -c CONFIG.yaml"),
    (["--ckpt", "missing.ckpt", "--labels", "1"], "missing.ckpt does not exist: train one with `enat fit"),
    (["--preset", "enat_s", "--labels", "1"], "--preset / -c need --official_weights"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, msg):
    assert main(["sample", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("enat: error:") and msg in err


def test_bad_labels_name_the_value(files, tmp_path, capsys):
    d, _ = files
    assert main(["sample", "--ckpt", str(d / "tiny.ckpt"), "--labels", "1,x", "--out", str(tmp_path / "o")]) == 2
    assert "--labels [1, 'x']: not a valid" in capsys.readouterr().err


def test_existing_outputs_need_overwrite(files, tmp_path, capsys):
    d, _ = files
    base = ["sample", "--ckpt", str(d / "tiny.ckpt"), "--labels", "1,2", "--steps", "2", "--no_progress",
            "--out", str(tmp_path / "o")]
    assert main(base) == 0
    assert "GPU available" not in capsys.readouterr().err  # no training chatter from the predict Trainer
    assert main(base + ["--seed", "9"]) == 2  # other settings into the same folder
    err = capsys.readouterr().err
    assert err.startswith("enat: error:") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--seed", "9", "--overwrite"]) == 0
    assert "(0 chunks resumed)" in capsys.readouterr().out
