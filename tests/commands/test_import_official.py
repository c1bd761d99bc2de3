"""`enat import-official`: official weights -> a generator checkpoint equal to from_official."""
import json

import torch

from enat_testing import tolerance
from enat_lightning.cli import main
from enat_lightning.models import from_official
from enat_lightning.sampling.checkpoint import load_generator, net_to_yaml_form


def test_round_trip_equals_from_official(tmp_path, official_enat, capsys):
    torch.save(official_enat["state_dict"], tmp_path / "nnet_ema.pth")
    cfg_json = json.dumps(official_enat["config"])
    rc = main(["import-official", "--nnet", str(tmp_path / "nnet_ema.pth"), "--official-config", cfg_json,
               "--out", str(tmp_path / "tiny.ckpt")])
    assert rc == 0 and "tiny.ckpt" in capsys.readouterr().out
    model, cfg = load_generator(tmp_path / "tiny.ckpt")
    ref = from_official(official_enat["config"], official_enat["state_dict"])
    case = official_enat["cases"]["fwd_noreuse"]
    with torch.no_grad():
        a, b = model(case["masked_ids"], case["context"]), ref(case["masked_ids"], case["context"])
    assert torch.equal(a.logits, b.logits) and torch.equal(a.feat, b.feat)
    assert (a.logits - case["logits"]).abs().max() <= tolerance(case["logits"])
    ckpt = torch.load(tmp_path / "tiny.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"] == net_to_yaml_form(cfg)  # the one config form (class_path/init_args)
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"net", "ema"}


def test_preset_mismatch_and_missing_file_are_one_line_errors(tmp_path, official_enat, capsys):
    torch.save(official_enat["state_dict"], tmp_path / "nnet_ema.pth")
    rc = main(["import-official", "--nnet", str(tmp_path / "nnet_ema.pth"), "--preset", "enat_s",
               "--out", str(tmp_path / "x.ckpt")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("enat: error:") and "nnet_ema.pth does not fit" in err
    rc = main(["import-official", "--nnet", str(tmp_path / "none.pth"), "--preset", "enat_s",
               "--out", str(tmp_path / "x.ckpt")])
    assert rc == 2 and "none.pth does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()
