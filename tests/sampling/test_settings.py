"""SamplerSettings: the one definition of every sampler option and default (issue 13.2)."""
import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from enat_lightning.sampling.settings import SamplerSettings, as_settings

PKG = Path(__file__).resolve().parents[2] / "enat_lightning"


def test_defaults_are_the_official_sampler():
    s = SamplerSettings()
    assert (s.steps, s.cfg_scale, s.mask_temp, s.samp_temp, s.schedule, s.reuse) == (8, 2.5, 1.5, 6.0, "cosine", True)
    assert (s.order, s.guidance, s.uncond_skip_steps, s.strategy, s.guidance_interval) == \
        ("confidence", "linear", (), None, None)
    assert s.weights() == [s_ / 8 * 2.5 for s_ in range(8)]


@pytest.mark.parametrize("kw, field", [
    (dict(steps=0), "steps"), (dict(steps=2.5), "steps"), (dict(cfg_scale=-1.0), "cfg_scale"),
    (dict(mask_temp=-0.1), "mask_temp"), (dict(samp_temp=-1), "samp_temp"), (dict(cfg_scale=float("nan")), "cfg_scale"),
    (dict(schedule="zigzag"), "schedule"), (dict(order="spiral"), "order"), (dict(guidance="cosine"), "guidance"),
    (dict(guidance_power=0.0), "guidance_power"), (dict(guidance="interval"), "guidance_interval"),
    (dict(guidance="interval", guidance_interval=(5, 2)), "guidance_interval"),
    (dict(guidance="interval", guidance_interval=(0, 8)), "guidance_interval"),
    (dict(guidance_interval=(1,)), "guidance_interval"), (dict(uncond_skip_steps=(8,)), "uncond_skip_steps"),
    (dict(uncond_skip_steps=(-1,)), "uncond_skip_steps"),
    (dict(uncond_skip_steps=(1,)), "uncond_skip_steps"),  # step 0 runs no uncond pass (w=0): nothing to reuse
    (dict(reuse="yes"), "reuse"),
])
def test_bad_values_name_the_field_and_value(kw, field):
    with pytest.raises(ValueError, match=rf"SamplerSettings\.{field} .*got"):
        SamplerSettings(**kw)


def test_negative_scale_message_says_ge_zero():
    with pytest.raises(ValueError, match=r"cfg_scale must be >= 0, got -1.0"):
        SamplerSettings(cfg_scale=-1.0)


def test_lists_become_tuples_and_round_trip_through_dicts():
    s = SamplerSettings(schedule=[0.5, 0.0], steps=2, uncond_skip_steps=[1], guidance="constant",
                        guidance_interval=[0, 1])
    assert s.schedule == (0.5, 0.0) and s.uncond_skip_steps == (1,) and s.guidance_interval == (0, 1)
    d = s.to_dict()
    assert d["schedule"] == [0.5, 0.0] and SamplerSettings.from_dict(d) == s
    assert hash(s) == hash(SamplerSettings.from_dict(d))
    with pytest.raises(ValueError, match=r"unknown sampler settings \['cfg'\]"):
        SamplerSettings.from_dict({"cfg": 3.0})
    assert as_settings(None) == SamplerSettings() and as_settings({"steps": 4}) == SamplerSettings(steps=4)


def test_jsonargparse_round_trip():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False)
    p.add_class_arguments(SamplerSettings, "sampler")
    cfg = p.parse_args(["--sampler.cfg_scale", "3.0", "--sampler.order", "halton", "--sampler.guidance", "interval",
                        "--sampler.guidance_interval", "[1, 5]", "--sampler.uncond_skip_steps", "[3, 5]"])
    s = p.instantiate_classes(cfg).sampler
    assert s == SamplerSettings(cfg_scale=3.0, order="halton", guidance="interval", guidance_interval=(1, 5),
                                uncond_skip_steps=(3, 5))
    assert p.instantiate_classes(p.parse_args([])).sampler == SamplerSettings()
    # YAML form, as in a config file: sampler: {cfg_scale: 3.0}
    cfg = p.parse_string("sampler: {cfg_scale: 3.0, schedule: linear, steps: 4}")
    assert p.instantiate_classes(cfg).sampler == SamplerSettings(cfg_scale=3.0, schedule="linear", steps=4)
    # dump and parse again: the same settings
    dumped = p.dump(p.parse_args(["--sampler.samp_temp", "2.0", "--sampler.uncond_skip_steps", "[4]"]))
    assert p.instantiate_classes(p.parse_string(dumped)).sampler == SamplerSettings(samp_temp=2.0, uncond_skip_steps=(4,))
    # the names come from the registries (orders.py, schedules.py): an unknown one is refused by name
    with pytest.raises(ValueError, match="order must be one of.*confidence.*'spiral'"):
        p.instantiate_classes(p.parse_args(["--sampler.order", "spiral"]))
    with pytest.raises(ValueError, match="guidance must be one of.*linear.*'ramp'"):
        p.instantiate_classes(p.parse_args(["--sampler.guidance", "ramp"]))


# -- one definition of every sampler default -----------------------------------------------------------
FIELDS = {f.name for f in dataclasses.fields(SamplerSettings)}
FLAGS = {"--steps", "--cfg", "--cfg-scale", "--mask-temp", "--samp-temp", "--schedule", "--order", "--guidance",
         "--guidance-power", "--guidance-interval", "--uncond-skip-steps", "--strategy"}


def _literal(node) -> bool:
    """A constant, or a non-empty list / tuple of constants (e.g. a schedule or a list of steps)."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    return isinstance(node, (ast.List, ast.Tuple)) and bool(node.elts) and all(
        isinstance(e, ast.Constant) for e in node.elts)


def second_definitions(source: str) -> list[int]:
    """Line numbers where ``source`` declares a sampler default: a parameter or dataclass field named
    like a SamplerSettings field with a literal default, a dict literal giving one a value, or an
    argparse sampler flag with a literal default."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
            lines += [d.lineno for arg, d in pairs if d is not None and arg.arg in FIELDS and _literal(d)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id in FIELDS and node.value is not None and _literal(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            lines += [v.lineno for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value in FIELDS and _literal(v)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            if any(isinstance(x, ast.Constant) and x.value in FLAGS for x in node.args):
                lines += [k.value.lineno for k in node.keywords if k.arg == "default" and _literal(k.value)]
    return sorted(lines)


def test_the_detector_finds_the_old_duplicates():
    old = ("def generate(model, labels, *, steps: int = 8, cfg_scale: float = 0.0):\n    pass\n"
           "@dataclass\nclass DemoSettings:\n    cfg_scale: float = 3.0\n"
           "s = {\"steps\": 8, \"cfg_scale\": 2.5}\n"
           "p.add_argument(\"--cfg\", type=float, default=2.5)\n")
    assert second_definitions(old) == [1, 1, 5, 6, 6, 7]
    assert second_definitions("settings = replace(settings, cfg_scale=0.0)\nf(steps=None)\n") == []


def test_no_second_definition_of_a_sampler_default_in_the_package():
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "sampling":
            continue
        text = path.read_text()
        hits += [f"{path.relative_to(PKG.parent)}:{n}: {text.splitlines()[n - 1].strip()}"
                 for n in second_definitions(text)]
    assert not hits, "sampler defaults declared outside sampling/settings.py:\n" + "\n".join(hits)


def test_every_entry_point_samples_with_the_one_default():
    from enat_lightning.callbacks.fid import FIDCallback
    from enat_lightning.callbacks.flops import GFLOPsCallback
    from enat_lightning.callbacks.sample_grid import SampleGrid
    from enat_lightning.evaluation import evaluate as evaluate_fn
    from enat_lightning.sampling import generate
    from enat_lightning.studies.study import sample_quality_metric

    default = SamplerSettings()
    assert SampleGrid().sampler == default and FIDCallback().settings == default
    assert GFLOPsCallback().sampler == default
    for fn in (generate, sample_quality_metric):
        assert inspect.signature(fn).parameters["settings"].default is None  # None -> SamplerSettings()
    assert inspect.signature(evaluate_fn).parameters["settings"].default == default
    from enat_lightning.cli import parse

    for argv in (["sample", "--out", "x"], ["evaluate", "--ckpt", "x"], ["flops", "--preset", "enat-s"],
                 ["analyze", "similarity", "--ckpt", "c", "--out", "o"]):
        _, kwargs = parse(argv)
        assert kwargs["sampler"] == default, argv
    _, kwargs = parse(["sample", "--out", "x", "--cfg", "3", "--sampler.order", "halton",
                       "--sampler.uncond_skip_steps", "[3,5]", "--sampler.guidance", "interval",
                       "--sampler.guidance_interval", "[2,6]", "--sampler.reuse", "false"])
    assert kwargs["sampler"] == SamplerSettings(cfg_scale=3.0, order="halton", uncond_skip_steps=(3, 5),
                                                guidance="interval", guidance_interval=(2, 6), reuse=False)
    _, kwargs = parse(["sample", "--out", "x", "--sampler.schedule", "[0.5, 0.0]", "--sampler.steps", "2"])
    assert kwargs["sampler"] == SamplerSettings(steps=2, schedule=(0.5, 0.0))


def test_yaml_callbacks_take_a_sampler_section():
    import yaml

    exp = PKG.parent / "experiments"
    for path in sorted(exp.glob("*.yaml")):
        for cb in (yaml.safe_load(path.read_text()).get("trainer") or {}).get("callbacks") or []:
            args = cb.get("init_args") or {}
            assert not {"steps", "cfg_scale", "mask_temp", "samp_temp"} & set(args), (path, cb["class_path"])
            if "sampler" in args:
                SamplerSettings.from_dict(args["sampler"])
