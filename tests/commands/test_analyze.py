"""`enat analyze similarity|attention-maps|attention` on tiny checkpoints written in tmp_path."""
import csv

import pytest

from enat_lightning.cli import main
from enat_lightning.models import ENAT, NAT, ENATConfig, NATConfig
from enat_lightning.sampling.checkpoint import save_generator_checkpoint
from enat_testing import perturbed



@pytest.fixture
def ckpts(tmp_path):
    # demo-sized (codebook 128, grid 4, 10 classes): `analyze attention` finds the demo val split itself
    nat = perturbed(NAT(NATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=4, depth=2)))
    enat = perturbed(ENAT(ENATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=4, enc_depth=2,
                                      dec_depth=1)))
    return {"nat": save_generator_checkpoint(tmp_path / "nat.ckpt", nat.cfg, nat.state_dict()),
            "enat": save_generator_checkpoint(tmp_path / "enat.ckpt", enat.cfg, enat.state_dict())}


def test_similarity_command(ckpts, tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(["analyze", "similarity", "--ckpt", str(ckpts["enat"]), "--steps", "4", "--num-samples", "3",
               "--batch-size", "2", "--layer", "all", "--out", str(out), "--tensorboard", str(tmp_path / "tb")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "newly_revealed" in text and "3->4" in text
    rows = list(csv.DictReader(open(out / "similarity.csv")))
    assert {r["layer"] for r in rows} == {"enc0", "enc1", "dec0", "final"}
    assert len(rows) == 4 * 3 * 3
    import numpy as np

    assert np.load(out / "similarity.npz")["sim"].shape == (4, 3, 3, 16)  # layers, pairs, 3 samples (2 batches)
    for name in ("similarity_maps.png", "similarity_means.png", "similarity_layers.png", "similarity.npz"):
        assert (out / name).stat().st_size > 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_attention_maps_command(ckpts, tmp_path, capsys):
    rc = main(["analyze", "attention-maps", "--ckpt", str(ckpts["nat"]), "--steps", "3", "--num-samples", "3",
               "--batch-size", "2", "--labels", "3,4", "--out", str(tmp_path / "am")])
    assert rc == 0 and "block1" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "am" / "attention_maps.csv")))
    assert len(rows) == 2 * 3 and float(rows[0]["mask_to_visible"]) == 0.0  # step 1: nothing visible
    assert (tmp_path / "am" / "attention_maps.png").stat().st_size > 0


def test_attention_removal_command(ckpts, tmp_path, capsys):
    rc = main(["analyze", "attention", "--ckpt", str(ckpts["nat"]), "--remove", "mask_to_visible,visible_to_mask",
               "--limit", "64", "--out", str(tmp_path / "cut")])
    assert rc == 0
    assert "| removal | masked_loss | delta_masked_loss | masked_acc |" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "cut" / "attention_removal.csv")))
    assert [r["removal"] for r in rows] == ["none", "mask_to_visible", "visible_to_mask"]
    assert float(rows[0]["delta_masked_loss"]) == 0.0
    assert float(rows[1]["masked_loss"]) != float(rows[0]["masked_loss"])  # the cut changes the network
    md = (tmp_path / "cut" / "attention_removal.md").read_text()
    assert "Fig. 2" in md and md.count("\n|") >= 4


def test_attention_removal_with_demo_fid(ckpts, tmp_path):
    rc = main(["analyze", "attention", "--ckpt", str(ckpts["nat"]), "--remove", "mask_to_visible", "--limit", "32",
               "--metric", "demo-fid", "--num-samples", "20", "--steps", "3", "--out", str(tmp_path / "cut")])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "cut" / "attention_removal.csv")))
    assert all(float(r["demo_fid"]) > 0 for r in rows) and "accuracy" in rows[0]


def test_user_errors_are_one_line(ckpts, tmp_path, capsys):
    assert main(["analyze", "attention", "--ckpt", str(ckpts["enat"]), "--out", str(tmp_path / "x")]) == 2
    assert "needs a NAT checkpoint" in capsys.readouterr().err
    assert main(["analyze", "attention", "--ckpt", str(ckpts["nat"]), "--remove", "mask_to_all",
                 "--out", str(tmp_path / "x")]) == 2
    assert "mask_to_all" in capsys.readouterr().err
    assert main(["analyze", "similarity", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "z")]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    assert main(["analyze", "similarity", "--ckpt", str(ckpts["nat"]), "--labels", "12", "--num-samples", "1",
                 "--steps", "2", "--out", str(tmp_path / "y")]) == 2
    assert "--labels [12]" in capsys.readouterr().err
