"""Mask-ratio schedules shared by training (how many tokens to mask) and sampling (how many stay
masked after each step).

``mask_ratio(t, kind)`` maps progress t in [0, 1] to the fraction of tokens that are still masked:
t = 0 -> 1 (everything masked), t = 1 -> 0. The MaskGIT family (Chang et al. 2022, §3.2):

    cosine  cos(pi/2 * t)     (default; ENAT and MaskGIT)
    linear  1 - t
    square  1 - t**2
    cubic   1 - t**3
    sqrt    1 - sqrt(t)

Sampling with S steps keeps ``num_masked(L, s, S) = floor(L * mask_ratio((s+1)/S))`` tokens masked
after step s, evaluated in float64 exactly as the official sampler (REPRO: the official code calls
``np.floor(L * np.cos(pi/2 * ratio))`` on Python floats).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from enat_lightning.errors import InvalidInput

SCHEDULES = ("cosine", "linear", "square", "cubic", "sqrt")
OFFICIAL_SCHEDULE = "cosine"  # the official sampler's mask schedule: the default of SamplerSettings.schedule

_RATIO = {
    "cosine": lambda t: math.cos(math.pi / 2 * t),
    "linear": lambda t: 1.0 - t,
    "square": lambda t: 1.0 - t * t,
    "cubic": lambda t: 1.0 - t ** 3,
    "sqrt": lambda t: 1.0 - math.sqrt(t),
}
_RATIO_T = {
    "cosine": lambda t: torch.cos(math.pi / 2 * t),
    "linear": lambda t: 1.0 - t,
    "square": lambda t: 1.0 - t * t,
    "cubic": lambda t: 1.0 - t ** 3,
    "sqrt": lambda t: 1.0 - torch.sqrt(t),
}

Schedule = str | Sequence[float]


def _check_kind(kind: str) -> None:
    if kind not in _RATIO:
        raise InvalidInput(f"unknown mask schedule {kind!r}; choose from {list(SCHEDULES)} or pass a "
                         f"list of per-step ratios (manual schedule)")


def mask_ratio(t: float | torch.Tensor, kind: str = "cosine") -> float | torch.Tensor:
    """Fraction of tokens still masked at progress t in [0, 1] (float, or a tensor elementwise)."""
    _check_kind(kind)
    if isinstance(t, torch.Tensor):
        if t.numel() and (bool((t < 0).any()) or bool((t > 1).any())):
            raise InvalidInput("mask_ratio: progress t must lie in [0, 1]")
        return _RATIO_T[kind](t).clamp(0.0, 1.0)
    if not 0.0 <= t <= 1.0:
        raise InvalidInput(f"mask_ratio: progress t must lie in [0, 1], got {t}")
    return min(1.0, max(0.0, _RATIO[kind](float(t))))


def masked_counts(seq_len: int, steps: int, schedule: Schedule | None = None) -> list[int]:
    """Number of masked tokens in the *input* of each of the ``steps`` steps, plus the final 0.

    Returns S+1 counts: counts[0] = L (all masked), counts[s+1] = tokens still masked after step s,
    counts[S] = 0. ``schedule`` is a name from SCHEDULES, or a manual list of S ratios (the masked
    fraction after each step; non-increasing, the last one 0); None = the official schedule
    (``OFFICIAL_SCHEDULE``, also the default of ``SamplerSettings.schedule``).
    """
    if schedule is None:
        schedule = OFFICIAL_SCHEDULE
    if steps < 1:
        raise InvalidInput(f"steps must be >= 1, got {steps}")
    if isinstance(schedule, str):
        _check_kind(schedule)
        after = [math.floor(seq_len * _RATIO[schedule]((s + 1) / steps)) for s in range(steps)]
    else:
        ratios = [float(r) for r in schedule]
        if len(ratios) != steps:
            raise InvalidInput(f"manual schedule has {len(ratios)} ratios but steps={steps}")
        if any(not 0.0 <= r <= 1.0 for r in ratios):
            raise InvalidInput(f"manual schedule ratios must lie in [0, 1], got {ratios}")
        if ratios[-1] != 0.0:
            raise InvalidInput(f"manual schedule must end at ratio 0 (all tokens decoded), got {ratios[-1]}")
        after = [math.floor(seq_len * r) for r in ratios]
    counts = [seq_len, *[max(0, min(seq_len, n)) for n in after]]
    if any(b > a for a, b in zip(counts, counts[1:])):
        raise InvalidInput(f"mask schedule must be non-increasing (decoded tokens stay decoded); "
                         f"got masked counts {counts}")
    return counts


# ---------------------------------------------------------------------------------------------
# Guidance schedules: the weight w_s of step s in  logits = cond + w_s (cond - uncond).
# A schedule is ONE registered function ``fn(scale, steps, *, power, interval) -> [w_0 .. w_{S-1}]``
# (``@register_guidance("name")``); ``SamplerSettings.guidance`` accepts every registered name.
GuidanceFn = Callable[..., list]
GUIDANCE: dict[str, GuidanceFn] = {}


def register_guidance(name: str):
    """Decorator: register ``fn(scale, steps, *, power, interval)`` as the guidance schedule ``name``."""
    def add(fn: GuidanceFn) -> GuidanceFn:
        if name in GUIDANCE:
            raise InvalidInput(f"guidance schedule {name!r} is already registered")
        GUIDANCE[name] = fn
        return fn
    return add


@register_guidance("linear")
def linear_guidance(scale: float, steps: int, **_) -> list[float]:
    """w_s = s/S * scale (official ENAT: updated at the *end* of a step, so step 0 is unguided)."""
    return [(1.0 * s / steps) * scale for s in range(steps)]  # REPRO: the official float ops


@register_guidance("constant")
def constant_guidance(scale: float, steps: int, **_) -> list[float]:
    return [float(scale)] * steps


@register_guidance("power")
def power_guidance(scale: float, steps: int, *, power: float = 1.0, **_) -> list[float]:
    """w_s = scale * (1 - cos(pi * (s/S)**power)) / 2 (RAR's "power-cosine" decay,
    bytedance/1d-tokenizer; RAR writes uncond + g (cond - uncond), i.e. our w = g - 1, and ramps
    g - 1 the same way)."""
    return [scale * (1 - math.cos(math.pi * (s / steps) ** power)) / 2 for s in range(steps)]


@register_guidance("interval")
def interval_guidance(scale: float, steps: int, *, interval: tuple[int, int] | None = None, **_) -> list[float]:
    """w_s = scale for first <= s <= last (inclusive), else 0."""
    if interval is None:
        raise InvalidInput("guidance 'interval' needs guidance_interval (first and last step)")
    first, last = interval
    return [float(scale) if first <= s <= last else 0.0 for s in range(steps)]


def guidance_weights(kind: str, scale: float, steps: int, *, power: float = 1.0,
                     interval: tuple[int, int] | None = None) -> list[float]:
    """Per-step guidance weights w_0 .. w_{S-1} of the registered schedule ``kind``."""
    if kind not in GUIDANCE:
        raise InvalidInput(f"unknown guidance schedule {kind!r}; choose from {list(GUIDANCE)}")
    return [float(w) for w in GUIDANCE[kind](scale, steps, power=power, interval=interval)]
