"""Per-step sampling strategies in the format of AutoNAT's searched strategy files.

AutoNAT (Ni et al., "Revisiting Non-Autoregressive Transformers for Efficient Image Synthesis",
code LeapLabTHU/ImprovedNAT, ``configs/*strategy*.yaml``) searches one value per step for S steps::

    manual_ratios:    [r_0 .. r_{S-2}]   masked fraction after step s (the last step reveals all)
    manual_temp:      [t_0 .. t_{S-2}]   mask (re-masking Gumbel) temperature at step s (last: 0)
    manual_samp_temp: [u_0 .. u_{S-1}]   token sampling temperature at step s (no annealing)
    manual_cfg:       [c_0 .. c_{S-1}]   guidance weight at step s: cond + c_s (cond - uncond)

Their sampler keeps ``max(1, min(n_s - 1, floor(L * r_s)))`` tokens masked after step s < S-1 (at
least one revealed per step, at least one left for the last step); ``strategy_counts`` does the
same. A file written by AutoNAT's search (``yaml.dump`` of these four lists, where a list of one
value is written as a bare number) loads as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from enat_lightning.errors import InvalidInput

KEYS = ("manual_ratios", "manual_temp", "manual_samp_temp", "manual_cfg")


@dataclass(frozen=True)
class Strategy:
    ratios: tuple[float, ...]  # S-1
    mask_temps: tuple[float, ...]  # S-1
    samp_temps: tuple[float, ...]  # S
    cfg: tuple[float, ...]  # S

    @property
    def steps(self) -> int:
        return len(self.cfg)


def _numbers(path: Path, key: str, value) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]  # AutoNAT writes 1-lists as scalars
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidInput(f"strategy file {path}: {key} must be a list of finite numbers, got {value!r}")
        out.append(float(v))
    return tuple(out)


def load_strategy(path: str | Path) -> Strategy:
    """Reads and checks an AutoNAT strategy file (one-line ValueError naming the file and key)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"strategy file {path} does not exist (sampler setting `strategy`)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InvalidInput(f"strategy file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"strategy file {path} must be a mapping with keys {list(KEYS)}, got {type(data).__name__}")
    missing = [k for k in KEYS if k not in data]
    unknown = sorted(set(data) - set(KEYS))
    if missing or unknown:
        raise InvalidInput(f"strategy file {path}: missing keys {missing}, unknown keys {unknown}; an AutoNAT "
                         f"strategy has exactly {list(KEYS)}")
    ratios, temps, samp, cfg = (_numbers(path, k, data[k]) for k in KEYS)
    S = len(cfg)
    if S < 1 or len(samp) != S or len(ratios) != S - 1 or len(temps) != S - 1:
        raise InvalidInput(f"strategy file {path}: inconsistent lengths (manual_ratios {len(ratios)}, manual_temp "
                         f"{len(temps)}, manual_samp_temp {len(samp)}, manual_cfg {len(cfg)}); S steps need "
                         f"S-1, S-1, S, S values")
    if any(not 0.0 <= r <= 1.0 for r in ratios):
        raise InvalidInput(f"strategy file {path}: manual_ratios must lie in [0, 1], got {list(ratios)}")
    for key, vals in (("manual_temp", temps), ("manual_samp_temp", samp), ("manual_cfg", cfg)):
        if any(v < 0 for v in vals):
            raise InvalidInput(f"strategy file {path}: {key} must be >= 0, got {list(vals)}")
    return Strategy(ratios, temps, samp, cfg)


def strategy_counts(seq_len: int, strategy: Strategy) -> list[int]:
    """Masked tokens in the input of each step plus the final 0 (S+1 values), AutoNAT's rule."""
    counts = [seq_len]
    for r in strategy.ratios:
        counts.append(max(1, min(counts[-1] - 1, math.floor(seq_len * r))) if seq_len > 1 else 0)
    counts.append(0)
    return [max(0, c) for c in counts]
