"""The fused linear + GELU of ``models/blocks.py`` (CPU inference): same values, used only where it may be."""
import copy

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from enat_lightning.models import blocks
from enat_lightning.models.blocks import linear_gelu


@pytest.fixture
def fc():
    torch.manual_seed(0)
    return nn.Linear(24, 96)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_fused_equals_the_two_op_path(fc, approximate):
    x = torch.randn(3, 7, 24)
    with torch.no_grad():
        assert blocks._fusable(x, fc) == torch.backends.mkldnn.is_available()
        fused = linear_gelu(x, fc, approximate)
        reference = torch.nn.functional.gelu(fc(x), approximate=approximate)
    assert torch.allclose(fused, reference, atol=1e-5, rtol=1e-5)


def test_fused_path_only_without_autograd_on_fp32_cpu_and_outside_counters(fc):
    x = torch.randn(2, 5, 24)
    assert not blocks._fusable(x, fc)  # grad mode and fc.weight requires grad: two ops (backward)
    with torch.no_grad():
        assert not blocks._fusable(x.double(), copy.deepcopy(fc).double())
        with FlopCounterMode(display=False) as counter:
            assert not blocks._fusable(x, fc)  # a dispatch mode would not see the fused kernel
            linear_gelu(x, fc, "tanh")
    assert counter.get_total_flops() == 2 * 2 * 5 * 24 * 96  # the GEMM is counted
    y = linear_gelu(x, fc, "tanh")
    y.sum().backward()  # training: the two-op path, with gradients
    assert fc.weight.grad is not None
