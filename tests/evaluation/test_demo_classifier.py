import torch

from enat_lightning.evaluation.frechet import fid_from_stats, stats_from_features
from enat_lightning.demo.data import load_digit_images
from enat_lightning.evaluation import load_feature_extractor, score_images
from enat_lightning.demo.classifier import (FEATURE_NAME, DemoClassifierFeatures, build_demo_classifier,
                                                       train_demo_classifier)
from enat_lightning.evaluation.features import to_uint8
from enat_lightning.evaluation.reference import load_reference


def test_cached_file_is_reused_and_complete(demo_classifier_file):
    before = demo_classifier_file.stat().st_mtime_ns
    assert build_demo_classifier(demo_classifier_file, dataset="digits") == demo_classifier_file
    assert demo_classifier_file.stat().st_mtime_ns == before  # not retrained
    assert not list(demo_classifier_file.parent.glob(f".{demo_classifier_file.name}.*"))  # no tmp file left
    meta = torch.load(demo_classifier_file, weights_only=True)["meta"]
    assert meta["num_classes"] == 10 and meta["image_size"] == 16


def test_training_is_deterministic():
    images, labels, _ = load_digit_images()
    a = train_demo_classifier(images[:128], labels[:128], epochs=2).state_dict()
    b = train_demo_classifier(images[:128], labels[:128], epochs=2).state_dict()
    c = train_demo_classifier(images[:128], labels[:128], epochs=2, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_classifier_separates_real_digits_from_noise(demo_classifier_file):
    ex = load_feature_extractor(f"demo:{demo_classifier_file}")
    assert ex.name == f"{FEATURE_NAME}:digits" and ex.meta["val_accuracy"] > 0.85
    images, labels, is_val = load_digit_images()
    train = load_reference("demo:digits:train", ex)
    real = score_images(to_uint8(images[is_val]), labels[is_val], ex, train)
    noise = score_images(to_uint8(torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(0))),
                         None, ex, train)
    assert real["accuracy"] > 0.85 and real["is_mean"] > 6 and real["fid"] < 10
    assert noise["fid"] > 20 * real["fid"] and noise["is_mean"] < 2 and "accuracy" not in noise
    # stats of the val split equal the features computed by hand
    val = load_reference("demo:digits:val", ex)
    by_hand = stats_from_features(ex(to_uint8(images[is_val])).features, ex.name)
    assert fid_from_stats(val, by_hand) < 1e-6


def test_missing_classifier_file_is_named(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        DemoClassifierFeatures.load(tmp_path / "nope.pt")


def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    import functools

    import enat_lightning.demo.classifier as dc

    monkeypatch.setattr(dc, "train_demo_classifier", functools.partial(train_demo_classifier, epochs=1))
    path = tmp_path / "classifier.pt"
    torch.save({"state_dict": {}, "meta": {"recipe_version": -1}}, path)
    build_demo_classifier(path, dataset="digits")
    assert torch.load(path, weights_only=True)["meta"]["recipe_version"] != -1
    DemoClassifierFeatures.load(path)  # loads cleanly
