"""The content-addressed feature cache: computed once per exact pixels and network, refused when it lies."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from enat_lightning.errors import InvalidInput
from enat_lightning.evaluation.extractors import Features
from enat_lightning.evaluation.feature_cache import cached_features


class CountingNet:
    """A feature network (mean colour per channel and its square) that counts the images it sees."""

    name = "toy-net:6"
    num_features = 6

    def __init__(self):
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        x = images.float().mean((2, 3)) / 255
        return Features(torch.cat([x, x ** 2], 1), None)


def images(seed, n=7):
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_computed_once_then_read_back(tmp_path):
    net, imgs = CountingNet(), images(0)
    first = cached_features(net, imgs, tmp_path, batch_size=3, log=lambda m: None)
    assert net.seen == 7 and len(list(tmp_path.glob("toy-net-*.npz"))) == 1
    again = cached_features(net, imgs.clone(), tmp_path, log=lambda m: None)
    assert net.seen == 7  # the network did not run again
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert first.dtype == torch.float32  # stored as float16: the first call returns the stored values too
    torch.testing.assert_close(first, net(imgs).features, rtol=1e-3, atol=1e-4)


def test_other_pixels_or_network_are_another_entry(tmp_path):
    net, imgs = CountingNet(), images(0)
    cached_features(net, imgs, tmp_path, log=lambda m: None)
    changed = imgs.clone()
    changed[3, 1, 2, 2] ^= 1  # one pixel one grey level off
    cached_features(net, changed, tmp_path, log=lambda m: None)
    other = CountingNet()
    other.name = "toy-net-2:6"
    cached_features(other, imgs, tmp_path, log=lambda m: None)
    assert net.seen == 14 and other.seen == 7 and len(list(tmp_path.glob("*.npz"))) == 3


def test_a_file_that_does_not_match_its_name_is_refused(tmp_path):
    net, imgs = CountingNet(), images(0)
    cached_features(net, imgs, tmp_path, log=lambda m: None)
    path = next(tmp_path.glob("*.npz"))
    with np.load(path) as z:
        parts = dict(z)
    np.savez(path, **{**parts, "key": np.array("0" * 64)})  # made for other images
    with pytest.raises(InvalidInput, match=rf"{path.name}.*other images.*delete it"):
        cached_features(net, imgs, tmp_path, log=lambda m: None)
    np.savez(path, features=parts["features"])
    with pytest.raises(InvalidInput, match=rf"{path.name} lacks \['key', 'feature'\]"):
        cached_features(net, imgs, tmp_path, log=lambda m: None)


def test_only_uint8_images(tmp_path):
    with pytest.raises(InvalidInput, match="uint8 images"):
        cached_features(CountingNet(), images(0).float(), tmp_path)
