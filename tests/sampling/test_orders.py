"""Token orders and guidance schedules are registries: adding one is one function in one file, an
unknown name is refused, and ``generate`` runs whatever is registered."""
import pytest
import torch

from enat_lightning.models import ENAT, ENATConfig
from enat_lightning.sampling import generate
from enat_lightning.sampling import orders as orders_mod
from enat_lightning.sampling import schedules as schedules_mod
from enat_lightning.sampling.orders import ORDERS, register_order
from enat_lightning.sampling.schedules import GUIDANCE, register_guidance
from enat_lightning.sampling.settings import SamplerSettings

TINY = ENATConfig(codebook_size=32, num_classes=5, grid=4, width=32, heads=4, enc_depth=2, dec_depth=1)


@pytest.fixture(scope="module")
def enat():
    torch.manual_seed(0)
    return ENAT(TINY).eval()


@pytest.fixture
def raster_order():
    """A toy order registered for one test: reveal positions in raster order (lowest index first)."""
    @register_order("raster-toy")
    def raster(ctx):
        prio = -torch.arange(ctx.grid * ctx.grid, dtype=torch.float32, device=ctx.device).expand(ctx.batch, -1)
        return lambda conf, masking, mask_temp: torch.where(masking, prio, conf)  # visible stay +inf

    yield "raster-toy"
    del ORDERS["raster-toy"]


def test_a_registered_order_is_sampled_with(enat, raster_order):
    s = SamplerSettings(steps=4, order=raster_order, cfg_scale=1.0)
    ids, trace = generate(enat, torch.tensor([0, 3]), s, generator=torch.Generator().manual_seed(0), return_trace=True)
    assert ids.shape == (2, 4, 4)
    # after step 0 the first n positions in raster order are the visible ones, for every row
    visible = trace.steps[1].input_ids != TINY.mask_id  # (B, L)
    n = int(visible[0].sum())
    assert n > 0 and visible[:, :n].all() and not visible[:, n:].any()


def test_builtin_orders_and_guidance_are_registered_objects():
    assert list(ORDERS) == ["confidence", "random", "halton"]
    assert list(GUIDANCE) == ["linear", "constant", "power", "interval"]
    assert ORDERS["confidence"] is orders_mod.confidence_order  # the default order too, not an else-branch


def test_unknown_order_and_guidance_are_refused_by_name():
    with pytest.raises(ValueError, match="order must be one of.*confidence.*random.*halton.*'spiral'"):
        SamplerSettings(order="spiral")
    with pytest.raises(ValueError, match="guidance must be one of.*linear.*'ramp'"):
        SamplerSettings(guidance="ramp")
    with pytest.raises(ValueError, match="already registered"):
        register_order("confidence")(lambda ctx: None)


def test_a_registered_guidance_schedule_sets_the_weights(enat):
    @register_guidance("last-only-toy")
    def last_only(scale, steps, **_):
        return [0.0] * (steps - 1) + [float(scale)]

    try:
        s = SamplerSettings(steps=4, guidance="last-only-toy", cfg_scale=3.0)
        assert s.weights() == [0.0, 0.0, 0.0, 3.0]
        _, trace = generate(enat, torch.tensor([1, 2]), s, generator=torch.Generator().manual_seed(0), return_trace=True)
        assert [st.cfg_weight for st in trace.steps] == [0.0, 0.0, 0.0, 3.0]
        assert [st.uncond_ran for st in trace.steps] == [False, False, False, True]
    finally:
        del schedules_mod.GUIDANCE["last-only-toy"]
