"""enat_lightning/demo/data.py: the demo's MNIST digits and the tests' sklearn digits."""
import json

import pytest
import torch

from enat_lightning.demo.data import (DIGITS, MNIST, build_demo_data, demo_paths, ensure_demo_data,
                                      fit_demo_tokenizer, get_dataset, load_demo_tokenizer, load_digit_images,
                                      load_mnist_images)
from enat_lightning.errors import MissingInput
from enat_lightning.tokenizers.demo import default_data_root

REPO_DATA = default_data_root()

CODEBOOK_SIZE = DIGITS.codebook_size


def test_mnist_from_the_installed_wheel_padded_and_split():
    images, labels, is_val = load_mnist_images()
    assert images.shape == (5000, 3, 32, 32) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() == 1 and images[:, :, :2].abs().max() == 0  # 2-pixel black border
    assert torch.equal(images[:, 0], images[:, 2])  # grey replicated to RGB
    assert torch.bincount(labels).tolist() == [500] * 10
    assert int(is_val.sum()) == 500 and torch.bincount(labels[is_val]).tolist() == [50] * 10
    for c in range(10):  # the last 50 of every class are held out
        v = is_val[labels == c]
        assert not v[:450].any() and v[450:].all()
    assert (MNIST.grid, MNIST.codebook_size) == (8, 64) and demo_paths().root.name == "demo"


def test_committed_mnist_kmeans_tokenizer_round_trips_held_out_digits():
    from enat_lightning.tokenizers.demo import DemoTokenizer, default_demo_tokenizer

    tok = DemoTokenizer.load(default_demo_tokenizer())
    assert (tok.codebook_size, tok.latent_side, tok.patch) == (256, 8, 4)
    images, _, is_val = load_mnist_images()
    ids = tok.encode(images[is_val])
    assert ids.shape == (500, 8, 8)
    assert (tok.decode(ids) - images[is_val]).pow(2).mean() < 0.01


def test_the_demo_tokenizer_is_the_committed_trained_vq_and_reconstructs_held_out_digits(tmp_path):
    """make demo's tokenizer: trained by experiments/tokenizers/mnist.yaml, committed (data/demo/tokenizer_vq.pt)."""
    from enat_lightning.tokenizers.autoencoder import VQAutoencoder

    paths = demo_paths(tmp_path / "demo")
    assert paths.tokenizer == REPO_DATA / "demo" / "tokenizer_vq.pt" and paths.tokenizer.stat().st_size < 5e6
    assert paths.tokenizer_spec == {"class_path": "enat_lightning.tokenizers.VQAutoencoder",
                                    "init_args": {"path": str(paths.tokenizer)}}
    tok = load_demo_tokenizer()
    assert isinstance(tok, VQAutoencoder) and not tok.training
    assert (tok.codebook_size, tok.token_shape) == (MNIST.codebook_size, (MNIST.grid, MNIST.grid))
    images, _, is_val = load_mnist_images()
    held_out = images[is_val][:100]
    mse = (tok.decode(tok.encode(held_out)) - held_out).pow(2).mean()
    assert 10 * torch.log10(1 / mse) > 24  # dB; the k-means patch tokenizer reaches 24.3 on all 500


def test_a_missing_committed_tokenizer_names_the_commands_that_remake_it():
    import dataclasses

    missing = dataclasses.replace(MNIST, trained_tokenizer="not_there.pt")
    with pytest.raises(MissingInput, match=r"not_there\.pt is missing.*git checkout.*enat fit -c "
                                           r"experiments/tokenizers/mnist\.yaml && enat tokenizer export"):
        load_demo_tokenizer(missing)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="'cifar'.*digits.*mnist"):
        get_dataset("cifar")
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
