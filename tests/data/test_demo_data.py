"""enat_lightning/data/demo.py (named test_demo_data: tests/tokenizers/test_demo.py exists)."""
import json

import torch

from enat_lightning.demo.data import (CODEBOOK_SIZE, build_demo_data, ensure_demo_data, fit_demo_tokenizer,
                                      load_digit_images)
from enat_lightning.tokenizers.demo import DemoTokenizer


def test_digits_split_and_range():
    images, labels, is_val = load_digit_images()
    assert images.shape == (1797, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert int(is_val.sum()) == 359 and set(labels[is_val].tolist()) == set(range(10))
    # the last 20% of each class is validation
    for c in range(10):
        v = is_val[labels == c]
        assert not v[: len(v) - int(v.sum())].any()


def test_ensure_builds_once_and_decodes_recognisably(tmp_path):
    paths = ensure_demo_data(tmp_path / "demo", dataset="digits")
    for split, n in (("train", 1438), ("val", 359)):
        m = json.loads((tmp_path / "demo" / "shards" / split / "manifest.json").read_text())
        assert m["sample_count"] == n and m["has_flip"] is False and m["latent_side"] == 4
        assert m["codebook_size"] == CODEBOOK_SIZE and m["num_classes"] == 10
    stamp = paths.train.joinpath("manifest.json").stat().st_mtime_ns
    assert ensure_demo_data(tmp_path / "demo", dataset="digits") == paths
    assert paths.train.joinpath("manifest.json").stat().st_mtime_ns == stamp  # not rebuilt
    tok = DemoTokenizer.load(paths.tokenizer)
    images, _, is_val = load_digit_images()
    rec = tok.decode(tok.encode(images[is_val]))
    assert (rec - images[is_val]).pow(2).mean() < 0.01  # held-out digits survive the round trip


def test_shards_follow_the_tokenizer_file(tmp_path):
    paths = ensure_demo_data(tmp_path / "demo", dataset="digits")
    images, _, is_val = load_digit_images()
    other = fit_demo_tokenizer(images[~is_val][:200], codebook_size=32)
    other.save(paths.tokenizer)
    build_demo_data(tmp_path / "demo", dataset="digits")  # stale shards (other tokenizer hash) are rewritten
    m = json.loads(paths.val.joinpath("manifest.json").read_text())
    assert m["codebook_size"] == 32 and m["tokenizer"] == other.identity()
    assert torch.equal(DemoTokenizer.load(paths.tokenizer).centroids, other.centroids)
