"""`make demo` end to end with tiny settings, and the TensorBoard dashboard a user opens."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from enat_lightning.demo import DemoSettings, run_demo
from enat_lightning.demo import pipeline
from enat_lightning.sampling import SamplerSettings

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model.net.init_args.width=32", "--model.net.init_args.enc_depth=1", "--model.net.init_args.dec_depth=1"]


class Messages(logging.Handler):
    """What Lightning logs through its rank-zero logger (the model summary, its tips)."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_messages():
    handler = Messages()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(handler)
    yield handler.messages
    log.removeHandler(handler)


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_demo_end_to_end_tiny(tmp_path, capsys, lightning_messages):
    run_dir = tmp_path / "demo"
    # the demo classifier's features instead of Inception keep this test fast; the real-Inception FID path
    # is tests/evaluation/test_inception.py
    settings = DemoSettings(eval_samples=60, grid_per_class=2, feature="demo", timing_samples=10)
    overrides = ["--trainer.max_steps=40", "--trainer.val_check_interval=20", *TINY]
    results = run_demo(REPO / "experiments" / "demo.yaml", run_dir, settings, overrides)
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "demo_grid.png" in out
    # what it prints is true: the token grid of the tokenizer it uses, no advert, no column of zero FLOPs
    from enat_lightning.demo.data import load_demo_tokenizer

    tok = load_demo_tokenizer()
    side = tok.token_shape[0]
    assert f"MNIST 32x32 digits -> {side}x{side} = {side * side} tokens of {tok.codebook_size} codes" in out
    assert "tokenizer_vq.pt" in out
    logged = "\n".join(lightning_messages)
    assert "Total params" in logged and "GMACs per generated image" in logged  # the model summary ran
    assert "| FLOPs" not in logged and "Total Flops" not in logged and "litlogger" not in logged

    assert (run_dir / "demo_grid.png").is_file()
    saved = json.loads((run_dir / "demo_results.json").read_text())
    assert saved["rows"] == results["rows"] and saved["train_steps"] == 40
    rows = {r["reuse"]: r for r in results["rows"]}
    assert set(rows) == {True, False}
    assert rows[True]["gflops_per_image"] < rows[False]["gflops_per_image"]  # reuse saves compute
    for r in rows.values():
        assert r["fid"] > 0 and 0 <= r["accuracy"] <= 1 and r["ms_per_image"] > 0
        assert r["feature_network"].startswith("demo classifier") and r["fid_real_samples"] == 500
    # for scale: real training digits and the tokenizer's reconstructions, in the same FID
    ref = {r["reference"]: r for r in saved["reference"]}
    assert set(ref) == {"real training digits", "tokenizer reconstructions"}
    for r in saved["rows"]:  # the floor beside each row
        assert r["tokenizer_floor_fid"] == ref["tokenizer reconstructions"]["fid"]
        assert r["fid_over_floor"] == pytest.approx(r["fid"] / r["tokenizer_floor_fid"])
        assert r["real_vs_real_fid"] == ref["real training digits"]["fid"]
    assert ref["real training digits"]["fid_fake_samples"] == 60 and ref["real training digits"]["accuracy"] > 0.8
    assert 0 < ref["real training digits"]["fid"] < min(r["fid"] for r in rows.values())  # a tiny model on 40 steps

    # runs are named (train, eval); nothing is logged into the demo directory itself (a run called ".")
    assert not list(run_dir.glob("events.out.tfevents.*"))
    train = events(run_dir / "train").Tags()
    for scalar in ("train/loss", "train/acc", "lr", "grad_norm", "tokens/s", "samples/s", "val/loss",
                   "demo_classifier/fid", "demo_classifier/accuracy", "flops/gmacs_total"):
        assert scalar in train["scalars"], f"{scalar} missing from TensorBoard"
    assert "data/skipped_samples" not in train["scalars"]  # nothing was skipped: no always-zero card
    assert train["images"], "no image grid logged during training"
    assert any("config" in t for t in train["tensors"]), "resolved config not logged as text"

    ev = events(run_dir / "eval")
    assert "demo/class_grid" in ev.Tags()["images"]
    for tag in ("demo/fid_reuse", "demo/fid_no_reuse", "demo/accuracy_reuse", "demo/gflops_reuse"):
        assert tag in ev.Tags()["scalars"]
    # the custom-scalars layout: loss, accuracy, FID, GFLOPs first, each chart matching logged tags
    layout = layout_pb2.Layout.FromString(ev.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    first = layout.category[0]
    assert [c.title.split(" ")[0] for c in first.chart][:4] == ["loss", "accuracy", "FID", "GFLOPs"]
    import re

    logged = set(train["scalars"]) | set(ev.Tags()["scalars"])
    for chart in first.chart:
        assert any(re.search(p, t) for p in chart.multiline.tag for t in logged), chart.title


def test_demo_resumes_a_finished_run_without_retraining(tmp_path):
    run_dir = tmp_path / "demo"
    settings = DemoSettings(eval_samples=20, grid_per_class=1, feature="demo", timing_samples=5)
    tiny = ["--trainer.max_steps=10", *TINY]
    first = run_demo(REPO / "experiments" / "demo.yaml", run_dir, settings, tiny)
    second = run_demo(REPO / "experiments" / "demo.yaml", run_dir, settings, tiny)
    assert first["checkpoint"] == second["checkpoint"]
    # the same command gives the same numbers: a fresh run in another folder retrains to the same metrics
    again = run_demo(REPO / "experiments" / "demo.yaml", tmp_path / "again", settings, tiny)
    for a, b in zip(first["rows"], again["rows"]):
        assert (a["fid"], a["accuracy"]) == (b["fid"], b["accuracy"])


def test_reference_rows_and_real_features_are_measured_once_per_cache(monkeypatch):
    """compare_reuse with a shared cache (run_seeds): the second call feeds the feature network only its samples."""
    from enat_lightning.demo.data import load_demo_tokenizer
    from enat_lightning.evaluation.features import load_feature_extractor
    from enat_lightning.models import ENATConfig, build_model

    torch.manual_seed(0)
    model = build_model(ENATConfig(codebook_size=64, num_classes=10, grid=8, width=16, heads=2, enc_depth=1,
                                   dec_depth=1)).eval()
    extractor = load_feature_extractor("demo")
    seen = []
    counting = type("Counting", (), {"name": extractor.name, "num_features": extractor.num_features,
                                     "description": "counting",
                                     "__call__": lambda self, x: (seen.append(len(x)), extractor(x))[1]})()
    s = DemoSettings(eval_samples=20, feature="demo", timing_samples=2)
    cache = {}
    first = pipeline.compare_reuse(model, load_demo_tokenizer(), s, SamplerSettings(steps=2), extractor=counting,
                                   cache=cache)
    n_first, seen[:] = sum(seen), []
    second = pipeline.compare_reuse(model, load_demo_tokenizer(), s, SamplerSettings(steps=2), extractor=counting,
                                    cache=cache)
    assert n_first == 500 + 2 * 20 + 500 + 20  # held-out, two sampler rows, reconstructions, training digits
    assert sum(seen) == 2 * 20 and second[1] == first[1]


def test_inception_features_of_the_reference_images_come_from_the_feature_cache(tmp_path, monkeypatch):
    """With the Inception (whose name pins its weights), the held-out digits, training digits and
    reconstructions go through the network once, into the content-addressed cache; a later run (a fresh
    process: no in-memory cache) feeds it only its samples, with the same numbers."""
    import dataclasses as dc

    from enat_lightning.demo import data as demo_data
    from enat_lightning.demo.data import load_demo_tokenizer
    from enat_lightning.evaluation.extractors import INCEPTION_NAME
    from enat_lightning.evaluation.features import load_feature_extractor
    from enat_lightning.models import ENATConfig, build_model

    real_paths = demo_data.demo_paths
    monkeypatch.setattr(demo_data, "demo_paths", lambda root=None, dataset="mnist": dc.replace(
        real_paths(root, dataset), features=tmp_path / "features"))
    torch.manual_seed(0)
    model = build_model(ENATConfig(codebook_size=64, num_classes=10, grid=8, width=16, heads=2, enc_depth=1,
                                   dec_depth=1)).eval()
    extractor = load_feature_extractor("demo")
    seen = []
    counting = type("Counting", (), {"name": INCEPTION_NAME, "num_features": extractor.num_features,
                                     "description": "counting",
                                     "__call__": lambda self, x: (seen.append(len(x)), extractor(x))[1]})()
    s = DemoSettings(eval_samples=20, feature="demo", timing_samples=2)
    first = pipeline.compare_reuse(model, load_demo_tokenizer(), s, SamplerSettings(steps=2), extractor=counting)
    assert sum(seen) == 500 + 2 * 20 + 500 + 20
    # the three reference sets, never the samples
    assert len(list((tmp_path / "features").glob("inception-v3-2015-12-05-*.npz"))) == 3
    seen[:] = []
    second = pipeline.compare_reuse(model, load_demo_tokenizer(), s, SamplerSettings(steps=2), extractor=counting)
    assert sum(seen) == 2 * 20  # only the samples
    assert [r["fid"] for r in second[0]] == [r["fid"] for r in first[0]] and second[1] == first[1]
    no_cache = pipeline.compare_reuse(model, load_demo_tokenizer(), dc.replace(s, feature_cache=False),
                                      SamplerSettings(steps=2), extractor=counting)
    assert [r["fid"] for r in no_cache[1]] == pytest.approx([r["fid"] for r in first[1]], rel=1e-3)  # float16


def test_seed_study_runs_each_seed_and_tabulates_the_spread(tmp_path, monkeypatch):
    calls = []

    caches = []

    def fake_run_demo(config, run_dir, settings, extra_args, cache):  # the real one is covered above
        calls.append((Path(run_dir).name, settings.seed, extra_args))
        caches.append(cache)
        k = settings.seed
        rows = [{"sampler": name, "fid": 10.0 + k + d, "accuracy": 0.95 + 0.01 * k, "tokenizer_floor_fid": 8.0,
                 "fid_over_floor": (10.0 + k + d) / 8.0, "gflops_per_image": 0.1, "ms_per_image": 1.0}
                for name, d in (("ENAT, reuse", 0.0), ("ENAT, w/o reuse", 1.0))]
        return {"rows": rows, "reference": [], "minutes": 1.0}

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    out = pipeline.run_seeds(3, REPO / "experiments" / "demo.yaml", tmp_path, DemoSettings(), ["--x=1"])
    base = pipeline.config_seed(REPO / "experiments" / "demo.yaml")
    assert [c[:2] for c in calls] == [("seed0", 0), ("seed1", 1), ("seed2", 2)]
    assert caches[0] is caches[1] is caches[2]  # one cache: the reference rows are measured once
    assert calls[1][2] == ["--x=1", f"--seed_everything={base + 1}", f"--model.recipe_seed={base + 1}"]
    spread = out["spread"]["ENAT, reuse"]
    assert spread["fid_mean"] == pytest.approx(11.0) and spread["fid_spread_rel"] == pytest.approx(2 / 11)
    assert spread["accuracy_spread_points"] == pytest.approx(2.0)
    table = (tmp_path / "demo_seeds.md").read_text()
    assert f"| {base + 2} | ENAT, w/o reuse | 13.00 | 8.00 | 1.62 | 97.0 % |" in table
    assert json.loads((tmp_path / "demo_seeds.json").read_text())["spread"] == out["spread"]
    with pytest.raises(ValueError, match="--seeds"):
        pipeline.run_seeds(0, REPO / "experiments" / "demo.yaml", tmp_path)


def test_missing_eval_extra_stops_before_training(tmp_path, monkeypatch, capsys):
    from enat_lightning.cli import main
    from enat_lightning.evaluation import extractors

    monkeypatch.setattr(extractors, "FID_HELPER", False)
    assert main(["demo", "--run_dir", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'enat-lightning[eval]'" in err[0]
    assert not (tmp_path / "demo" / "train").exists()


def test_the_demo_reference_features_are_committed():
    """A fresh clone's `make demo` reads the Inception features of the held-out and training digits from
    data/demo/features instead of 1 000 Inception passes (and those of the committed tokenizer's
    reconstructions, whose pixels depend on the CPU's float rounding: a machine that decodes one pixel
    differently computes them once). Remake them: delete the folder's .npz files and run `make demo`."""
    from enat_lightning.demo.data import demo_paths, load_demo_tokenizer
    from enat_lightning.evaluation.extractors import INCEPTION_NAME
    from enat_lightning.evaluation.feature_cache import images_key

    folder = demo_paths().features
    committed = {p.name for p in folder.glob("*.npz")}
    tok = load_demo_tokenizer()
    sets = {"held-out digits": pipeline.held_out_images()[0],
            **{k: v[0] for k, v in pipeline.reference_images(tok).items()}}
    missing = [name for name, imgs in sets.items()
               if f"inception-v3-2015-12-05-{images_key(INCEPTION_NAME, imgs)[:20]}.npz" not in committed]
    assert missing in ([], ["tokenizer reconstructions"]), f"no committed features for {missing} in {folder}"


@pytest.mark.slow
def test_the_committed_reference_features_are_the_inception_features_of_their_images():
    from enat_lightning.demo.data import demo_paths
    from enat_lightning.evaluation.feature_cache import cached_features
    from enat_lightning.evaluation.features import load_feature_extractor

    extractor = load_feature_extractor("inception")
    images = pipeline.held_out_images()[0]
    committed = cached_features(extractor, images, demo_paths().features)
    fresh = torch.cat([extractor(images[i:i + 100]).features for i in range(0, len(images), 100)])
    torch.testing.assert_close(committed, fresh, rtol=1e-3, atol=1e-3)  # float16 storage
