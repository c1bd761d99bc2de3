"""Sampler flags of the argparse commands, generated from ``SamplerSettings`` (no default here).

Every flag defaults to None, so an omitted flag takes the dataclass default. The historical short
names stay (--steps, --cfg, --mask-temp, --samp-temp, --schedule, --no-reuse); the zoo options are
--order, --guidance, --guidance-power, --guidance-interval FIRST,LAST, --uncond-skip-steps 2,4,6
and --strategy FILE. Every field is also accepted as ``--sampler.<field> VALUE`` (lists as
``[3,5,7]``), the form of the jsonargparse commands that replace this module.
"""
from __future__ import annotations

from dataclasses import fields

from enat_lightning.sampling.settings import SamplerSettings

# field -> (flag, type, help)
def _ints(text: str) -> tuple[int, ...]:
    """'3,5,7' or '[3, 5, 7]' (the jsonargparse form) -> (3, 5, 7)."""
    return tuple(int(x) for x in str(text).strip("[]() ").split(",") if x.strip())


def _bool(text: str) -> bool:
    if str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _schedule(text: str):
    """A schedule name, or a list of ratios '[0.75, 0.25, 0.0]'."""
    t = str(text).strip()
    return tuple(float(x) for x in t.strip("[]() ").split(",") if x.strip()) if t.startswith(("[", "(")) else t


_INTS = _ints
_FLAGS = {
    "steps": ("--steps", int, "sampling steps"),
    "cfg_scale": ("--cfg", float, "guidance scale w (cond + w_s (cond - uncond)); 0 = unguided"),
    "mask_temp": ("--mask-temp", float, "Gumbel temperature of the confidence order"),
    "samp_temp": ("--samp-temp", float, "token sampling temperature"),
    "schedule": ("--schedule", _schedule, "mask schedule: cosine | linear | square | cubic | sqrt"),
    "order": ("--order", str, "token order: confidence | random | halton"),
    "guidance": ("--guidance", str, "guidance schedule: linear | constant | power | interval"),
    "guidance_power": ("--guidance-power", float, "exponent of the power guidance schedule"),
    "guidance_interval": ("--guidance-interval", _INTS, "FIRST,LAST steps (inclusive) of interval guidance"),
    "uncond_skip_steps": ("--uncond-skip-steps", _INTS, "comma-separated steps reusing the last cond-uncond residual"),
    "strategy": ("--strategy", str, "AutoNAT strategy YAML (per-step ratios, temperatures, guidance)"),
}


def add_sampler_arguments(parser, skip: tuple[str, ...] = ()) -> None:
    """Adds one flag per SamplerSettings field (``skip``: fields a command declares itself)."""
    g = parser.add_argument_group("sampler (omitted = SamplerSettings defaults: the official ImageNet-256 sampler)")
    for name, (flag, typ, text) in _FLAGS.items():
        if name in skip:
            continue
        default = getattr(SamplerSettings, name)
        g.add_argument(flag, f"--sampler.{name}", dest=f"sampler_{name}", type=typ, default=None,
                       help=f"{text} (default {default})")
    if "reuse" not in skip:
        g.add_argument("--no-reuse", action="store_true", help="sample without computation reuse")
        g.add_argument("--sampler.reuse", dest="sampler_reuse", type=_bool, default=None,
                       help="computation reuse: true | false (default true)")


def sampler_from_args(args) -> SamplerSettings:
    """The SamplerSettings of parsed flags (only the given ones override a default)."""
    given = {f.name: getattr(args, f"sampler_{f.name}") for f in fields(SamplerSettings)
             if getattr(args, f"sampler_{f.name}", None) is not None}
    if getattr(args, "no_reuse", False):
        given["reuse"] = False
    return SamplerSettings(**given)
