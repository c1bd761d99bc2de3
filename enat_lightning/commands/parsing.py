"""How a command function becomes a command line (jsonargparse), plus the conveniences documented in
docs/commands.md: ``--num-samples`` = ``--num_samples``; a bare bool flag means true and ``--no_X`` false;
``--labels 1,2,3`` for number lists and repeated ``--set a=1 --set b=2`` for others; a field of a dataclass
group without its group (``--steps 4`` = ``--sampler.steps 4``, also as an unambiguous abbreviation:
``--cfg``); and ``-c TRAINING.yaml`` (top-level ``model:``/``trainer:``/``data:``) = ``--experiment``.
"""
from __future__ import annotations

import inspect
from typing import Callable

TRAINING_CONFIG_KEYS = {"model", "trainer", "data", "seed_everything", "optimizer", "lr_scheduler", "ckpt_path"}


def command_parser(fn: Callable, prog: str):
    """jsonargparse parser of one command function: ``-c``, ``--print_config``, one option per parameter."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = ArgumentParser(prog=prog, description=inspect.getdoc(fn), exit_on_error=False)
    p.add_argument("-c", "--config", action=ActionConfigFile,
                   help="YAML file with this command's options (see --print_config)"
                        + ("; a training config (model:/trainer:/data:) here means --experiment"
                           if "experiment" in inspect.signature(fn).parameters else ""))
    p.add_function_arguments(fn, as_positional=getattr(fn, "positional", False), fail_untyped=True)
    return p



def _options(parser) -> dict[str, object]:
    """Long option -> its jsonargparse action."""
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}


def _is_list(action) -> bool:
    hint = str(getattr(action, "_typehint", ""))
    return "list[" in hint or "List[" in hint


def _grouped(opts: dict, name: str) -> str:
    if name in opts:
        return name
    grouped = [o for o in opts if o.count(".") == 1 and o.endswith(f".{name[2:]}")]
    if not grouped:  # an unambiguous abbreviation, as argparse allows for plain options: --cfg = --cfg_scale
        grouped = [o for o in opts if o.count(".") == 1 and o.split(".")[1].startswith(name[2:])]
    return grouped[0] if len(grouped) == 1 else name


def _is_bool(action) -> bool:
    return str(getattr(action, "_typehint", "")) in ("<class 'bool'>", "typing.Optional[bool]")


def one_line_error(prog: str, parser, e: Exception) -> str:
    """jsonargparse's (multi-line) message as one line: the option, the value, the expected type."""
    import re

    text = str(e)
    key, given = re.search(r'Parser key "([^"]+)"', text), re.search(r"Given value: (.*)", text)
    if key and given:
        action = _options(parser).get(f"--{key.group(1)}")
        hint = str(getattr(action, "_typehint", "")).replace("typing.", "").replace("<class '", "").replace("'>", "")
        return f"{prog}: --{key.group(1)} {given.group(1).strip()}: not a valid {hint} (see {prog} --help)"
    return f"{prog}: {' '.join(text.split())} (see {prog} --help)"


def normalize_argv(parser, argv: list[str], fn: Callable) -> list[str]:
    """Dashes in flag names, bare bool flags, ``a,b`` lists, ungrouped sampler fields, training ``-c``."""
    from enat_lightning.config_files import config_files, read_config_file

    for path in config_files(argv):
        read_config_file(path)  # missing, empty or not a mapping: one line naming the file
    opts = _options(parser)
    takes_experiment = "experiment" in inspect.signature(fn).parameters
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("-c", "--config") and takes_experiment and i + 1 < len(argv):
            data = read_config_file(argv[i + 1])
            if isinstance(data, dict) and data and set(data) <= TRAINING_CONFIG_KEYS:
                out += ["--experiment+" if _is_list(opts["--experiment"]) else "--experiment", argv[i + 1]]
                i += 2
                continue
        if not tok.startswith("--") or tok == "--":
            out.append(tok)
            i += 1
            continue
        name, eq, value = tok.partition("=")
        name = "--" + name[2:].replace("-", "_")
        if name not in opts:
            name = _grouped(opts, name)  # --steps = --sampler.steps (a field of one dataclass group)
            negated = _grouped(opts, "--" + name[5:]) if name.startswith("--no_") else None
            if name not in opts and not eq and _is_bool(opts.get(negated)):
                out.append(f"{negated}=false")  # --no_reuse = --sampler.reuse=false
                i += 1
                continue
        action = opts.get(name)
        if _is_bool(action) and not eq and (i + 1 == len(argv) or argv[i + 1].startswith("-")
                                or argv[i + 1].lower() not in ("true", "false", "yes", "no", "null")):
            out.append(f"{name}=true")
            i += 1
            continue
        if action is not None and _is_list(action) and not name.endswith("+"):
            if not eq and name[2:] in getattr(fn, "greedy_lists", ()):  # --compare A.json B.json: every value
                while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    out.append(f"{name}+={argv[i + 1]}")
                    i += 1
                i += 1
                continue
            if not eq and i + 1 < len(argv):
                value, eq = argv[i + 1], "="
                i += 1
            if not value.lstrip().startswith("["):
                numeric = any(f"[{t}]" in str(action._typehint) for t in ("int", "float"))
                if numeric and "," in value:
                    value = f"[{value}]"  # --labels 1,2,3
                else:
                    name += "+"  # --set a=1 --set b=2: each occurrence appends
        out.append(f"{name}{eq}{value}" if eq else name)
        i += 1
    return out
