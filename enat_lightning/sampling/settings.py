"""The sampler's settings: the ONE place that declares every sampler option and its default.

``generate``, ``enat sample | evaluate | flops | analyze | study``, the callbacks, the demo and the
benchmarks all take a ``SamplerSettings``; YAML keys (``sampler: {cfg_scale: 3.0}``) and command-line
flags (``--sampler.cfg_scale 3.0``) are generated from this dataclass by jsonargparse. A value like
the demo's cfg 3.0 is a config value, never a second default.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .orders import ORDERS
from .schedules import GUIDANCE, OFFICIAL_SCHEDULE, SCHEDULES, guidance_weights, masked_counts
from enat_lightning.errors import InvalidInput

SAMP_TEMP_FLOOR = 1e-3  # REPRO: official floor on the annealed sampling temperature


@dataclass(frozen=True)
class StepPlan:
    """What every step of one generation uses (S steps; computed from the settings)."""

    counts: list[int]  # S+1: masked tokens in each step's input, then 0
    mask_temps: list[float]  # S: Gumbel temperature of the confidence order
    samp_temps: list[float]  # S: token sampling temperature (floored)
    weights: list[float]  # S: guidance weight w_s
    skip_uncond: frozenset[int]  # steps that reuse the last residual instead of an uncond pass


@dataclass(frozen=True)
class SamplerSettings:
    """Everything of the sampler that changes the result (recorded in every results file).

    Defaults: the official ImageNet-256 ENAT-L evaluation (cfg 2.5, mask_temp 1.5, samp_temp 6,
    8 steps, cosine schedule, confidence order, linear guidance ramp, reuse) -- they reproduce the
    official sampler's trace exactly (tests/sampling/test_iterative.py). docs/sampling.md describes
    every option.

    steps              number of sampling steps S (>= 1)
    cfg_scale          guidance scale w: logits = cond + w_s (cond - uncond); 0 = no guidance
    mask_temp          temperature of the Gumbel noise on the confidence (annealed linearly to 0)
    samp_temp          token sampling temperature (annealed linearly, floored at 1e-3)
    schedule           mask schedule name (cosine | linear | square | cubic | sqrt) or a list of S
                       masked ratios after each step (the last one 0)
    reuse              pass the previous step's output back (ENAT computation reuse)
    order              which masked positions a step reveals: a name of ``orders.ORDERS``
                       (confidence | random | halton, and any order registered there)
    guidance           guidance schedule: a name of ``schedules.GUIDANCE`` (linear = official
                       ramp | constant | power | interval, and any schedule registered there)
    guidance_power     exponent of the ``power`` schedule (RAR's power-cosine ramp)
    guidance_interval  (first, last) steps, inclusive, that ``interval`` guides
    uncond_skip_steps  steps that reuse the last residual (cond - uncond) at the still-masked
                       positions instead of running the unconditional pass
    strategy           path of an AutoNAT strategy file (per-step ratios, temperatures, guidance);
                       it replaces schedule, mask_temp, samp_temp, cfg_scale and guidance
    """

    steps: int = 8
    cfg_scale: float = 2.5
    mask_temp: float = 1.5
    samp_temp: float = 6.0
    schedule: str | tuple[float, ...] = OFFICIAL_SCHEDULE
    reuse: bool = True
    order: str = "confidence"  # a name registered in orders.py (checked in __post_init__)
    guidance: str = "linear"  # a name registered in schedules.py (checked in __post_init__)
    guidance_power: float = 3.0  # RAR's sample_fn default
    guidance_interval: tuple[int, int] | None = None
    uncond_skip_steps: tuple[int, ...] = ()
    strategy: str | None = None

    def __post_init__(self):
        def bad(name, why):
            raise InvalidInput(f"SamplerSettings.{name} {why}, got {getattr(self, name)!r}")

        # lists from YAML / JSON -> tuples (the dataclass stays hashable and comparable)
        for name in ("schedule", "guidance_interval", "uncond_skip_steps"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            bad("steps", "must be an integer >= 1")
        for name in ("cfg_scale", "mask_temp", "samp_temp", "guidance_power"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(name, "must be a finite number")
            if v < 0:
                bad(name, "must be >= 0")
        if self.guidance_power <= 0:
            bad("guidance_power", "must be > 0")
        if not isinstance(self.reuse, bool):
            bad("reuse", "must be true or false")
        if isinstance(self.schedule, str):
            if self.schedule not in SCHEDULES:
                bad("schedule", f"must be one of {list(SCHEDULES)} or a list of {self.steps} ratios")
        else:
            masked_counts(16, self.steps, self.schedule)  # raises a clear error on a bad manual list
        if self.order not in ORDERS:
            bad("order", f"must be one of {list(ORDERS)}")
        if self.guidance not in GUIDANCE:
            bad("guidance", f"must be one of {list(GUIDANCE)}")
        if self.guidance_interval is not None:
            iv = self.guidance_interval
            if (len(iv) != 2 or any(isinstance(x, bool) or not isinstance(x, int) for x in iv)
                    or not 0 <= iv[0] <= iv[1] < self.steps):
                bad("guidance_interval", f"must be [first, last] steps with 0 <= first <= last < steps={self.steps}")
        elif self.guidance == "interval" and self.strategy is None:
            bad("guidance_interval", "must be set ([first, last] steps, inclusive) when guidance='interval'")
        for s in self.uncond_skip_steps:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < self.steps:
                bad("uncond_skip_steps", f"must hold steps in [0, {self.steps})")
        if self.strategy is not None:
            if not isinstance(self.strategy, str) or not self.strategy:
                bad("strategy", "must be the path of an AutoNAT strategy file")
            n = self._strategy().steps
            if n != self.steps:
                bad("steps", f"must equal the {n} steps of strategy file {self.strategy}")
        # a skipped step needs a residual from an earlier unconditional pass
        w = self.weights()
        ran = False
        for s in range(self.steps):
            if w[s] != 0 and s in self.uncond_skip_steps and not ran:
                bad("uncond_skip_steps", f"skips step {s}, but no earlier step ran an unconditional pass "
                                          f"to reuse (guidance weights {[round(x, 3) for x in w]})")
            ran = ran or (w[s] != 0 and s not in self.uncond_skip_steps)

    def _strategy(self):
        from .strategy import load_strategy

        return load_strategy(self.strategy)

    def weights(self) -> list[float]:
        """Guidance weight w_s of every step."""
        if self.strategy is not None:
            return list(self._strategy().cfg)
        return guidance_weights(self.guidance, self.cfg_scale, self.steps, power=self.guidance_power,
                                interval=self.guidance_interval)

    @property
    def guided(self) -> bool:
        """Whether any step runs (or reuses) an unconditional pass."""
        return any(w != 0 for w in self.weights())

    def plan(self, seq_len: int) -> StepPlan:
        """The per-step quantities for ``seq_len`` tokens to generate."""
        S = self.steps
        if self.strategy is not None:
            from .strategy import strategy_counts

            st = self._strategy()
            counts = strategy_counts(seq_len, st)
            mask_temps = [*st.mask_temps, 0.0]
            samp_temps = [max(t, SAMP_TEMP_FLOOR) for t in st.samp_temps]
        else:
            counts = masked_counts(seq_len, S, self.schedule)
            ratios = [1.0 * (s + 1) / S for s in range(S)]  # REPRO: the official float ops
            mask_temps = [self.mask_temp * (1 - r) for r in ratios]
            samp_temps = [max(self.samp_temp * (1 - r), SAMP_TEMP_FLOOR) for r in ratios]
        return StepPlan(counts, mask_temps, samp_temps, self.weights(), frozenset(self.uncond_skip_steps))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "SamplerSettings":
        """From a YAML / JSON mapping; unknown keys are an error naming them."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"unknown sampler settings {unknown}; known: {sorted(known)}")
        return cls(**d)


def as_settings(value: "SamplerSettings | dict | None") -> SamplerSettings:
    """A SamplerSettings from itself, a mapping of its fields (YAML), or None (the defaults)."""
    if value is None:
        return SamplerSettings()
    if isinstance(value, SamplerSettings):
        return value
    if isinstance(value, dict):
        return SamplerSettings.from_dict(value)
    raise TypeError(f"expected SamplerSettings or a mapping of its fields, got {type(value).__name__}")
