"""`enat fid-stats` and `enat evaluate` end to end on the demo (offline, CPU, seconds)."""
import json

import numpy as np
import pytest
import torch

from enat_lightning.evaluation.frechet import load_stats, sha256_file
from enat_lightning.cli import main
from enat_lightning.models import ENATConfig, build_model
from enat_lightning.sampling.checkpoint import save_generator_checkpoint


@pytest.fixture(scope="module")
def demo_setup(tmp_path_factory):
    from enat_lightning.demo.data import fit_demo_tokenizer, load_digit_images
    from enat_lightning.demo.classifier import build_demo_classifier

    root = tmp_path_factory.mktemp("demo_eval")
    images, _, _ = load_digit_images()
    shared_tok = tmp_path_factory.getbasetemp() / "shared_demo_tokenizer32.npz"  # session cache
    if not shared_tok.is_file():
        fit_demo_tokenizer(images[:300], codebook_size=32).save(shared_tok)
    (root / "tokenizer.npz").write_bytes(shared_tok.read_bytes())
    cls = build_demo_classifier(tmp_path_factory.getbasetemp() / "shared_demo_classifier.pt", dataset="digits")  # session cache
    cfg = ENATConfig(codebook_size=32, num_classes=10, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)
    torch.manual_seed(0)
    ckpt = save_generator_checkpoint(root / "gen.ckpt", cfg, build_model(cfg).state_dict())
    return root, cls, ckpt


def test_fid_stats_demo_then_evaluate_ckpt_and_samples(demo_setup, capsys):
    root, cls, ckpt = demo_setup
    stats = root / "stats.npz"
    assert main(["fid-stats", "--demo", "--feature", f"demo:{cls}", "--out", str(stats)]) == 0
    info = json.loads(capsys.readouterr().out)
    ref = load_stats(stats)
    assert info["num_samples"] == ref.num_samples == 4500 and ref.feature.startswith("demo-classifier")
    assert info["sha256"] == sha256_file(stats)

    out, samples = root / "results.json", root / "samples.npz"
    argv = ["evaluate", "--ckpt", str(ckpt), "--tokenizer", f"demo:{root / 'tokenizer.npz'}", "--feature",
            f"demo:{cls}", "--num-samples", "20", "--per-class-balanced", "--ref", str(stats), "--steps", "3",
            "--cfg_scale", "1.0", "--seed", "7", "--batch-size", "8", "--is-splits", "2", "--out", str(out),
            "--save-samples", str(samples)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    res = json.loads(out.read_text())
    assert printed == res
    assert res["num_samples"] == 20 and res["sampler"]["steps"] == 3 and res["sampler"]["cfg_scale"] == 1.0
    assert res["ref"]["sha256"] == sha256_file(stats) and res["seed"] == 7
    for key in ("fid", "is_mean", "is_std", "accuracy"):
        assert np.isfinite(res[key])
    assert res["fid"] > 0 and 0 <= res["accuracy"] <= 1

    with np.load(samples) as z:
        assert z["arr_0"].shape == (20, 16, 16, 3) and z["arr_0"].dtype == np.uint8
        assert z["labels"].tolist() == [i % 10 for i in range(20)]
    # Scoring the saved set gives the same numbers as the in-memory evaluation.
    assert main(["evaluate", "--samples", str(samples), "--feature", f"demo:{cls}", "--ref", str(stats),
                 "--is-splits", "2"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("fid", "is_mean", "accuracy"):
        assert again[key] == pytest.approx(res[key], rel=1e-9)


def test_fid_stats_from_shards_and_images(demo_setup, tmp_path, capsys):
    from PIL import Image

    from enat_lightning.demo.data import load_digit_images
    from enat_lightning.data.tokenize import tokenize_imagefolder
    from enat_lightning.tokenizers import load_tokenizer

    root, cls, _ = demo_setup
    images, _, _ = load_digit_images()
    folder = tmp_path / "imgs" / "class0"
    folder.mkdir(parents=True)
    for i in range(12):
        arr = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
    out = tmp_path / "folder.npz"
    assert main(["fid-stats", "--images", str(tmp_path / "imgs"), "--resolution", "16", "--feature",
                 f"demo:{cls}", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 12
    assert load_stats(out).mu.shape == (64,)

    # Token shards of the same images, decoded by their tokenizer: the reconstruction ceiling.
    tok_spec = f"demo:{root / 'tokenizer.npz'}"
    tokenize_imagefolder(tmp_path / "imgs", load_tokenizer(tok_spec), tmp_path / "shards", 16, flip=False,
                         progress=False)
    shard_stats = tmp_path / "shards.npz"
    assert main(["fid-stats", "--shards", str(tmp_path / "shards"), "--tokenizer", tok_spec, "--feature",
                 f"demo:{cls}", "--out", str(shard_stats)]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 12
    # decoded reconstructions are close to, but not the same as, the images
    from enat_lightning.evaluation.frechet import fid_from_stats

    assert 0 < fid_from_stats(load_stats(out), load_stats(shard_stats)) < 50
    assert main(["fid-stats", "--shards", str(tmp_path / "shards"), "--feature", f"demo:{cls}", "--out",
                 str(tmp_path / "y.npz")]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_errors_are_one_line(demo_setup, tmp_path, capsys):
    root, cls, ckpt = demo_setup
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    assert main(["evaluate", "--samples", str(tmp_path / "s.npz"), "--inception", str(weights)]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "pytorch-fid" in err and err.count("\n") == 1
    assert main(["fid-stats", "--images", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    assert "--inception PATH" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(ckpt), "--feature", f"demo:{cls}"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
