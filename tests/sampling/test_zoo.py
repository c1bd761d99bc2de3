"""The sampler zoo (issue 16): token orders, guidance schedules, skipped unconditional passes,
AutoNAT strategies and editing -- and the defaults still being today's sampler bit for bit."""
import math

import pytest
import torch

from enat_lightning.evaluation.flops import count_generation
from enat_lightning.models import ENAT, ENATConfig
from enat_lightning.sampling import generate
from enat_lightning.sampling.edit import EditResult, edit, edit_tokens, parse_region, region_token_mask
from enat_lightning.sampling.orders import _radical_inverse, halton_positions
from enat_lightning.sampling.schedules import guidance_weights, masked_counts
from enat_lightning.sampling.settings import SamplerSettings
from enat_lightning.sampling.strategy import load_strategy, strategy_counts

TINY = dict(codebook_size=32, num_classes=5, grid=4, width=32, heads=4)
LABELS = torch.tensor([0, 3, 4, 1])


@pytest.fixture(scope="module")
def enat():
    torch.manual_seed(0)
    model = ENAT(ENATConfig(**TINY, enc_depth=2, dec_depth=1))
    torch.manual_seed(0)
    with torch.no_grad():  # same perturbation as test_iterative.py
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def g(seed=7):
    return torch.Generator().manual_seed(seed)


# -- with every default the output equals the pre-zoo sampler bit for bit ------------------------------
# Ids produced by the sampler before SamplerSettings/orders/guidance existed (commit 1b7a6e1), same
# model and generator: the zoo's code paths must leave the official one untouched.
PINNED = {
    "default": (dict(), [[6, 20, 22, 22, 7, 13, 16, 2, 30, 31, 27, 13, 11, 27, 25, 31],
                         [11, 11, 10, 16, 24, 31, 16, 28, 16, 23, 31, 16, 28, 16, 1, 11],
                         [11, 31, 15, 1, 31, 2, 22, 2, 23, 25, 11, 15, 11, 28, 10, 26],
                         [25, 22, 22, 0, 31, 30, 16, 15, 16, 16, 31, 31, 11, 2, 5, 16]]),
    "noreuse": (dict(reuse=False), [[6, 20, 22, 22, 31, 13, 16, 2, 30, 31, 27, 13, 11, 27, 25, 31],
                                    [11, 11, 10, 16, 24, 31, 16, 28, 16, 23, 31, 16, 28, 16, 1, 11],
                                    [11, 31, 15, 1, 31, 2, 22, 2, 23, 25, 11, 15, 11, 28, 10, 26],
                                    [25, 22, 22, 0, 31, 30, 16, 15, 16, 16, 31, 31, 11, 2, 5, 16]]),
    "cfg0": (dict(cfg_scale=0.0), [[6, 20, 22, 22, 31, 13, 16, 11, 30, 31, 27, 13, 11, 27, 25, 31],
                                   [11, 11, 10, 16, 24, 31, 16, 28, 16, 23, 31, 16, 28, 16, 1, 11],
                                   [11, 31, 15, 1, 31, 2, 22, 2, 23, 25, 11, 15, 11, 28, 10, 26],
                                   [25, 22, 11, 0, 31, 30, 16, 15, 16, 16, 31, 31, 11, 2, 5, 16]]),
    "linear5": (dict(steps=5, cfg_scale=1.0, mask_temp=0.5, samp_temp=2.0, schedule="linear"),
                [[6, 20, 11, 31, 7, 10, 16, 2, 16, 20, 7, 13, 11, 2, 11, 16],
                 [11, 6, 20, 16, 24, 10, 16, 22, 2, 5, 25, 16, 11, 2, 25, 26],
                 [11, 31, 10, 11, 12, 11, 11, 22, 16, 22, 24, 15, 31, 5, 25, 18],
                 [11, 16, 22, 31, 31, 19, 16, 5, 1, 16, 31, 31, 31, 2, 2, 3]]),
}
LOWTEMP = [[11, 31, 22, 16, 31, 22, 16, 2, 16, 31, 31, 22, 31, 25, 19, 16],
           [11, 31, 10, 16, 31, 11, 16, 2, 16, 31, 31, 13, 11, 2, 25, 5],
           [11, 31, 10, 31, 31, 10, 16, 2, 16, 2, 25, 22, 31, 2, 25, 16],
           [2, 31, 22, 16, 31, 22, 16, 11, 16, 31, 31, 22, 31, 2, 25, 16]]


@pytest.mark.parametrize("case", sorted(PINNED))
def test_defaults_equal_the_pre_zoo_sampler_bit_for_bit(enat, case):
    kw, want = PINNED[case]
    assert generate(enat, LABELS, SamplerSettings(**kw), generator=g()).reshape(4, -1).tolist() == want


def test_low_temperature_trace_equals_the_pre_zoo_sampler(enat):
    ids, tr = generate(enat, LABELS, SamplerSettings(steps=6, cfg_scale=3.0, mask_temp=0.3, samp_temp=0.5),
                       generator=g(11), return_trace=True)
    assert ids.reshape(4, -1).tolist() == LOWTEMP
    assert [s.cfg_weight for s in tr.steps] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert float(tr.stack("confidence").clamp(max=0).sum()) == -744.328125


def test_keyword_overrides_equal_a_settings_object(enat):
    a = generate(enat, LABELS, steps=4, cfg_scale=1.0, generator=g())
    b = generate(enat, LABELS, SamplerSettings(steps=4, cfg_scale=1.0), generator=g())
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="unknown sampler settings"):
        generate(enat, LABELS, cfg=2.0)


# -- orders ---------------------------------------------------------------------------------------------
SCHEDULES = ["cosine", "linear", "sqrt", (0.9, 0.5, 0.1, 0.0)]


@pytest.mark.parametrize("order", ["confidence", "random", "halton"])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_each_order_reveals_exactly_the_schedules_counts(enat, order, schedule):
    s = SamplerSettings(steps=4, order=order, schedule=schedule, cfg_scale=1.5)
    ids, tr = generate(enat, LABELS, s, generator=g(), return_trace=True)
    want = masked_counts(16, 4, schedule)
    mask_id = enat.cfg.mask_id
    assert [int((st.input_ids == mask_id).sum(1).unique().item()) for st in tr.steps] == want[:4]
    assert not bool((ids == mask_id).any())
    for a, b in zip(tr.steps, tr.steps[1:]):  # revealed tokens never change
        vis = b.input_ids != mask_id
        assert torch.equal(b.input_ids[vis], a.sampled_ids[vis])


def _revealed_positions(trace, mask_id):
    return torch.stack([st.input_ids != mask_id for st in trace.steps])  # (S, B, L)


@pytest.mark.parametrize("order", ["random", "halton"])
def test_random_and_halton_orders_ignore_the_logits(enat, order):
    s = SamplerSettings(steps=5, order=order, cfg_scale=2.0)
    mask_id = enat.cfg.mask_id
    _, a = generate(enat, torch.tensor([0, 1, 2, 3]), s, generator=g(3), return_trace=True)
    _, b = generate(enat, torch.tensor([4, 4, 2, 0]), s, generator=g(3), return_trace=True)
    assert torch.equal(_revealed_positions(a, mask_id), _revealed_positions(b, mask_id))
    # the confidence order does look at the logits
    c = SamplerSettings(steps=5, cfg_scale=2.0, mask_temp=0.0)
    _, a = generate(enat, torch.tensor([0, 1, 2, 3]), c, generator=g(3), return_trace=True)
    _, b = generate(enat, torch.tensor([4, 4, 2, 0]), c, generator=g(3), return_trace=True)
    assert not torch.equal(_revealed_positions(a, mask_id), _revealed_positions(b, mask_id))


def test_halton_order_is_the_2d_halton_sequence(enat):
    # point i = (h_2(i), h_3(i)): (1/2, 1/3) (1/4, 2/3) (3/4, 1/9) (1/8, 4/9) -> raster index on a 4x4 grid
    assert halton_positions(4)[:4] == (2 * 4 + 1, 1 * 4 + 2, 3 * 4 + 0, 0 * 4 + 1)
    for grid in (4, 16, 32):
        seq = halton_positions(grid)
        assert sorted(seq) == list(range(grid * grid))
    # the reference stops after 10,000 points: they cover the 16x16 and 32x32 grids, so ours is identical
    for grid in (16, 32):
        cells = {int(math.floor(_radical_inverse(i, 2) * grid)) * grid + int(math.floor(_radical_inverse(i, 3) * grid))
                 for i in range(1, 10_001)}
        assert len(cells) == grid * grid
    # every sample reveals the same positions, first the first Halton points
    s = SamplerSettings(steps=4, order="halton", cfg_scale=0.0)
    _, tr = generate(enat, LABELS, s, generator=g(), return_trace=True)
    vis1 = tr.steps[1].input_ids != enat.cfg.mask_id  # (B, L)
    n1 = 16 - masked_counts(16, 4)[1]
    assert (vis1 == vis1[:1]).all()
    assert sorted(vis1[0].nonzero().flatten().tolist()) == sorted(halton_positions(4)[:n1])


# -- guidance -------------------------------------------------------------------------------------------
def test_guidance_weights():
    assert guidance_weights("linear", 2.0, 4) == [0.0, 0.5, 1.0, 1.5]
    assert guidance_weights("constant", 2.0, 3) == [2.0, 2.0, 2.0]
    pw = guidance_weights("power", 2.0, 4, power=2.0)  # RAR: (1 - cos(pi (s/S)^p)) / 2 of the scale
    assert pw[0] == 0.0 and pw == pytest.approx([2.0 * (1 - math.cos(math.pi * (s / 4) ** 2)) / 2 for s in range(4)])
    assert guidance_weights("interval", 2.0, 5, interval=(1, 3)) == [0.0, 2.0, 2.0, 2.0, 0.0]


def test_constant_guidance_at_scale_zero_equals_unguided_sampling(enat):
    calls = []
    h = enat.register_forward_hook(lambda m, args, kw: calls.append(args[0].shape[0]))
    try:
        a = generate(enat, LABELS, SamplerSettings(guidance="constant", cfg_scale=0.0, steps=5), generator=g())
        assert calls == [4] * 5  # no unconditional rows at all
    finally:
        h.remove()
    b = generate(enat, LABELS, SamplerSettings(cfg_scale=0.0, steps=5), generator=g())
    assert torch.equal(a, b)
    for kind, extra in (("power", {}), ("interval", {"guidance_interval": (0, 4)})):
        c = generate(enat, LABELS, SamplerSettings(guidance=kind, cfg_scale=0.0, steps=5, **extra), generator=g())
        assert torch.equal(a, c)


def test_guidance_schedules_change_the_samples_and_interval_skips_uncond_passes(enat):
    base = generate(enat, LABELS, SamplerSettings(steps=5, cfg_scale=3.0, samp_temp=0.5), generator=g())
    for kind, extra in (("constant", {}), ("power", {}), ("interval", {"guidance_interval": (2, 3)})):
        other = generate(enat, LABELS, SamplerSettings(steps=5, cfg_scale=3.0, samp_temp=0.5, guidance=kind, **extra),
                         generator=g())
        assert not torch.equal(base, other), kind
    _, tr = generate(enat, LABELS, SamplerSettings(steps=5, guidance="interval", guidance_interval=(2, 3)),
                     generator=g(), return_trace=True)
    assert [st.uncond_ran for st in tr.steps] == [False, False, True, True, False]
    assert [st.cfg_weight for st in tr.steps] == [0.0, 0.0, 2.5, 2.5, 0.0]


# -- skipped unconditional passes ----------------------------------------------------------------------
def test_skipped_uncond_steps_run_fewer_network_rows(enat):
    rows = []
    h = enat.register_forward_hook(lambda m, args, kw: rows.append(args[0].shape[0]))
    try:
        full = generate(enat, LABELS, SamplerSettings(steps=8), generator=g())
        assert rows == [4] + [8] * 7
        rows.clear()
        skip = generate(enat, LABELS, SamplerSettings(steps=8, uncond_skip_steps=(3, 5, 7)), generator=g(),
                        return_trace=True)[0]
        assert rows == [4, 8, 8, 4, 8, 4, 8, 4]
    finally:
        h.remove()
    assert not torch.equal(full, skip)
    # ... and `enat flops` counts it: three unconditional passes fewer
    cfg = enat.cfg
    a = count_generation(cfg, SamplerSettings(steps=8), vq=None)
    b = count_generation(cfg, SamplerSettings(steps=8, uncond_skip_steps=(3, 5, 7)), vq=None)
    assert [p.uncond_ran for p in a.per_step] == [False] + [True] * 7
    assert [p.uncond_ran for p in b.per_step] == [False, True, True, False, True, False, True, False]
    assert b.gmacs_actual < a.gmacs_actual and b.gmacs_total < a.gmacs_total
    saved = sum(p.uncond_gmacs for p in a.per_step) - sum(p.uncond_gmacs for p in b.per_step)
    assert saved == pytest.approx(sum(a.per_step[s].uncond_gmacs for s in (3, 5, 7)))
    assert b.sampler["uncond_skip_steps"] == [3, 5, 7]


def test_skipped_step_reuses_the_last_residual_at_still_masked_positions(enat):
    # greedy, separate passes written out: at a skipped step the guidance residual is the previous
    # step's cond - uncond logits at the positions that are still masked
    s = SamplerSettings(steps=4, cfg_scale=2.0, mask_temp=0.0, samp_temp=1e-6, uncond_skip_steps=(2,))
    got, tr = generate(enat, LABELS, s, return_trace=True, trace_logits=True)
    mask_id = enat.cfg.mask_id
    st1, st2 = tr.steps[1], tr.steps[2]
    assert st2.uncond_logits is None and not st2.uncond_ran
    resid = st1.cond_logits - st1.uncond_logits  # (B, L, V): full logits with trace_logits
    masked2 = st2.input_ids == mask_id
    mixed = st2.cond_logits + st2.cfg_weight * resid
    want = torch.log_softmax(mixed, -1).argmax(-1)
    assert torch.equal(st2.sampled_ids[masked2], want[masked2])


# -- AutoNAT strategies --------------------------------------------------------------------------------
AUTONAT_T4 = """manual_ratios: [0.9, 0.6, 0.25]
manual_temp: [2.4, 1.2, 0.8]
manual_samp_temp: [2.9, 1.9, 1.1, 0.7]
manual_cfg: [0.0001, 0.9, 1.6, 1.2]
"""


def test_autonat_strategy_file_loads_and_drives_every_step(enat, tmp_path):
    path = tmp_path / "AutoNAT_T4_strategy.yaml"
    path.write_text(AUTONAT_T4)
    st = load_strategy(path)
    assert st.steps == 4 and st.cfg == (0.0001, 0.9, 1.6, 1.2)
    s = SamplerSettings(steps=4, strategy=str(path))
    plan = s.plan(16)
    # AutoNAT's rule: max(1, min(n_s - 1, floor(L r_s))) after steps 0..S-2, then 0
    assert plan.counts == [16, 14, 9, 4, 0] == strategy_counts(16, st)
    assert plan.weights == [0.0001, 0.9, 1.6, 1.2] and plan.mask_temps == [2.4, 1.2, 0.8, 0.0]
    assert plan.samp_temps == [2.9, 1.9, 1.1, 0.7]
    ids, tr = generate(enat, LABELS, s, generator=g(), return_trace=True)
    assert [st_.num_masked for st_ in tr.steps] == [16, 14, 9, 4]
    assert [st_.cfg_weight for st_ in tr.steps] == [0.0001, 0.9, 1.6, 1.2]
    assert all(st_.uncond_ran for st_ in tr.steps)  # w_0 = 1e-4 != 0: the uncond pass runs at step 0
    # a one-value list is written by AutoNAT's yaml.dump as a bare number (2-step strategies)
    two = tmp_path / "t2.yaml"
    two.write_text("manual_ratios: 0.5\nmanual_temp: 1.0\nmanual_samp_temp: [1.0, 1.0]\nmanual_cfg: [0.5, 1.0]\n")
    assert SamplerSettings(steps=2, strategy=str(two)).plan(16).counts == [16, 8, 0]


def test_the_real_autonat_t8_strategy_format_loads(tmp_path):
    # the layout of LeapLabTHU/ImprovedNAT configs/AutoNAT_L-T8_strategy.yaml (values rounded here)
    path = tmp_path / "AutoNAT_L-T8_strategy.yaml"
    path.write_text("manual_ratios: [0.953, 0.880, 0.794, 0.746, 0.625, 0.407, 0.261]\n"
                    "manual_temp: [2.40, 2.48, 1.19, 0.77, 1.07, 0.94, 0.78]\n"
                    "manual_samp_temp: [2.90, 1.87, 1.14, 1.38, 1.47, 1.38, 1.71, 0.71]\n"
                    "manual_cfg: [0.0001, 0.0001, 0.0001, 0.915, 1.616, 1.195, 1.383, 1.227]\n")
    plan = SamplerSettings(strategy=str(path)).plan(256)  # 8 steps: the default steps match
    assert plan.counts == [256, 243, 225, 203, 190, 160, 104, 66, 0]


@pytest.mark.parametrize("text, match", [
    ("- 1\n- 2\n", "must be a mapping"),
    ("manual_ratios: [0.5]\nmanual_temp: [1.0]\nmanual_samp_temp: [1.0, 1.0]\n", r"missing keys \['manual_cfg'\]"),
    (AUTONAT_T4 + "extra: 1\n", r"unknown keys \['extra'\]"),
    (AUTONAT_T4.replace("[2.4, 1.2, 0.8]", "[2.4, 1.2]"), "inconsistent lengths"),
    (AUTONAT_T4.replace("0.9, 0.6", "1.9, 0.6"), r"manual_ratios must lie in \[0, 1\]"),
    (AUTONAT_T4.replace("[2.9,", "[-2.9,"), "manual_samp_temp must be >= 0"),
    (AUTONAT_T4.replace("[0.0001,", "[abc,"), "manual_cfg must be a list of finite numbers"),
    ("manual_ratios: [0.5\n", "not valid YAML"),
])
def test_bad_strategy_files_give_clear_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        SamplerSettings(steps=4, strategy=str(path))
    assert str(path) in str(e.value)


def test_strategy_steps_must_match_and_file_must_exist(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(AUTONAT_T4)
    with pytest.raises(ValueError, match=r"SamplerSettings\.steps must equal the 4 steps of strategy file"):
        SamplerSettings(strategy=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        SamplerSettings(strategy=str(tmp_path / "missing.yaml"))


# -- editing --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["confidence", "random", "halton"])
def test_editing_never_changes_a_token_outside_the_region(enat, order):
    torch.manual_seed(1)
    src = torch.randint(0, 32, (4, 4))
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[1:3, 0:3] = True  # 6 tokens
    for seed in range(6):
        s = SamplerSettings(steps=4, order=order, cfg_scale=2.0)
        ids, tr = generate(enat, LABELS, s, generator=g(seed), return_trace=True,
                           init_ids=torch.where(region, enat.cfg.mask_id, src).reshape(1, -1).repeat(4, 1))
        assert torch.equal(ids[:, ~region], src[~region].expand(4, -1))
        assert not bool((ids == enat.cfg.mask_id).any())
        # the schedule counts only the region; every outside token is visible from step 0
        assert [st.num_masked for st in tr.steps] == masked_counts(6, 4)[:4]
        assert [int((st.input_ids == enat.cfg.mask_id).sum(1)[0]) for st in tr.steps] == masked_counts(6, 4)[:4]
    out = edit_tokens(enat, src, region, LABELS, SamplerSettings(steps=3), g())
    assert torch.equal(out[:, ~region], src[~region].expand(4, -1))


class PatchTokenizer:
    """Toy tokenizer: the mean grey level of each 4x4 patch, quantized to 32 levels."""

    codebook_size, downsample = 32, 4

    def encode(self, images):
        grey = images.mean(1, keepdim=True)  # (B, 1, H, W)
        return (torch.nn.functional.avg_pool2d(grey, 4)[:, 0] * 31).round().long()

    def decode(self, ids):
        x = (ids.float() / 31).repeat_interleave(4, 1).repeat_interleave(4, 2)
        return x.unsqueeze(1).expand(-1, 3, -1, -1)

    def identity(self):
        return {"kind": "patch"}


def test_edit_an_image_through_the_tokenizer(enat):
    img = (torch.arange(16 * 16).reshape(16, 16) % 256).to(torch.uint8)[..., None].expand(16, 16, 3).numpy()
    box = parse_region("5,0,12,3")  # x 5..11, y 0..2 -> token columns 1..2, row 0
    mask = region_token_mask(box, (16, 16), (4, 4))
    assert mask.nonzero().tolist() == [[0, 1], [0, 2]]
    res = edit(enat, PatchTokenizer(), img, box, torch.tensor([1, 2]), SamplerSettings(steps=2), g())
    assert isinstance(res, EditResult) and res.ids.shape == (2, 4, 4) and res.images.shape == (2, 3, 16, 16)
    assert torch.equal(res.ids[:, ~mask], res.source_ids[~mask].expand(2, -1))
    with pytest.raises(ValueError, match="must satisfy"):
        region_token_mask((0, 0, 17, 4), (16, 16), (4, 4))
    with pytest.raises(ValueError, match="X0,Y0,X1,Y1"):
        parse_region("1,2,3")
    with pytest.raises(ValueError, match="same number"):
        generate(enat, LABELS[:2], SamplerSettings(steps=2),
                 init_ids=torch.tensor([[enat.cfg.mask_id] * 2 + [0] * 14, [enat.cfg.mask_id] + [0] * 15]))
