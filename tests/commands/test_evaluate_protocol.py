"""`enat fid-stats` writes the ADM layout; `enat evaluate` reports the metric set with its protocol record;
`enat evaluate --compare` refuses results of another protocol (demo feature network, CPU, seconds)."""
import json

import numpy as np
import pytest
import torch

from enat_lightning.cli import main
from enat_lightning.fileio import sha256_file
from enat_lightning.models import ENATConfig, build_model
from enat_lightning.sampling.checkpoint import save_generator_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from enat_lightning.demo.classifier import build_demo_classifier
    from enat_lightning.demo.data import fit_demo_tokenizer, load_digit_images

    root = tmp_path_factory.mktemp("protocol")
    images, _, _ = load_digit_images()
    shared_tok = tmp_path_factory.getbasetemp() / "shared_demo_tokenizer32.npz"  # session cache
    if not shared_tok.is_file():
        fit_demo_tokenizer(images[:300], codebook_size=32).save(shared_tok)
    cls = build_demo_classifier(tmp_path_factory.getbasetemp() / "shared_demo_classifier.pt", dataset="digits")
    cfg = ENATConfig(codebook_size=32, num_classes=10, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)
    torch.manual_seed(0)
    ckpt = save_generator_checkpoint(root / "gen.ckpt", cfg, build_model(cfg).state_dict())
    return root, cls, ckpt, shared_tok


def test_fid_stats_writes_an_adm_batch_and_evaluate_reports_the_metric_set(setup, capsys):
    root, cls, ckpt, tok = setup
    ref = root / "ref.npz"
    assert main(["fid-stats", "--demo", "--split", "val", "--feature", f"demo:{cls}", "--ref-images", "100",
                 "--out", str(ref)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ref_images"] == 100 and info["spatial"] is False  # the demo classifier has no mixed_6/conv
    with np.load(ref) as z:
        assert {"mu", "sigma", "arr_0"} <= set(z.files) and z["arr_0"].shape[0] == 100
        assert z["arr_0"].dtype == np.uint8 and z["arr_0"].shape[-1] == 3

    runs = []
    for n in (40, 40, 30):
        out = root / f"res_{n}_{len(runs)}.json"
        assert main(["evaluate", "--ckpt", str(ckpt), "--tokenizer", f"demo:{tok}", "--feature", f"demo:{cls}",
                     "--num-samples", str(n), "--per-class-balanced", "--ref", str(ref), "--steps", "3",
                     "--cfg_scale", "1.0", "--seed", str(len(runs)), "--batch-size", "20", "--is-splits", "2",
                     "--out", str(out)]) == 0
        captured = capsys.readouterr()
        res = json.loads(captured.out)
        runs.append(out)
    assert 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1 and res["precision_recall_reference_images"] == 100
    assert "spatial layer" in res["sfid_unavailable"] and res["labels"]["fid"] == "FID-30"
    assert "FID-30:" in captured.err and "Precision-30:" in captured.err  # the printed table
    p = res["protocol"]
    assert p["num_samples"] == 30 and p["reference"]["sha256"] == sha256_file(ref) and p["reference"]["images"] == 100
    assert p["feature_network"]["weights_sha256"] == sha256_file(cls) and p["labels"].startswith("per-class")
    assert p["metric_set"] == ["fid", "sfid", "is", "precision", "recall", "accuracy"] and "floor" in p["uint8_conversion"]
    assert res["subject"]["checkpoint"]["sha256"] == sha256_file(ckpt) and res["subject"]["seed"] == 2

    # same protocol (seed is the subject): side by side; another N: refused, naming the field; --force shows it
    assert main(["evaluate", "--compare", str(runs[0]), str(runs[1])]) == 0
    table = capsys.readouterr().out
    assert "FID-40" in table and "Recall-40" in table and "seed" in table
    assert main(["evaluate", "--compare", str(runs[0]), str(runs[2])]) == 2
    err = capsys.readouterr().err
    assert "protocol.num_samples is 40" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", "--compare", str(runs[0]), str(runs[2]), "--force"]) == 0
    assert "protocol.num_samples (differs)" in capsys.readouterr().out


def test_metric_selection_and_errors(setup, capsys):
    root, cls, ckpt, tok = setup
    samples = root / "s.npz"
    np.savez(samples, arr_0=np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    assert main(["evaluate", "--samples", str(samples), "--feature", f"demo:{cls}", "--ref", "demo_missing.npz",
                 "--metrics", "fid,kid"]) == 2
    assert "--metrics fid,kid" in capsys.readouterr().err
    assert main(["fid-stats", "--demo", "--feature", f"demo:{cls}", "--out", str(root / "r.npz")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--samples", str(samples), "--feature", f"demo:{cls}", "--ref", str(root / "r.npz"),
                 "--is-splits", "2", "--metrics", "precision,recall"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "fid" not in res and "is_mean" not in res and {"precision", "recall"} <= set(res)
    assert res["protocol"]["metric_set"] == ["precision", "recall"] and res["protocol"]["labels"] is None
    assert main(["evaluate", "--compare", str(root / "nothing.json"), str(samples)]) == 2
    assert "nothing.json does not exist" in capsys.readouterr().err
