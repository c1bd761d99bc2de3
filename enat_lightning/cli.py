"""Console entry points ``enat`` and ``lightning``: a table of commands, no logic.

``fit`` / ``validate`` / ``test`` go to LightningCLI (``enat_lightning.training_cli``). Every other
command is a typed function in ``enat_lightning/commands/`` whose signature is its command line,
parsed by jsonargparse like ``fit``: ``-c file.yaml`` and ``--print_config`` work for every command,
dataclass parameters become groups (``sampler: SamplerSettings`` -> ``--sampler.steps`` ...), and the
docstring is the help. The command-line conveniences on top are in ``commands/parsing.py``.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Callable

from enat_lightning.commands.parsing import command_parser, normalize_argv, one_line_error
from enat_lightning.errors import UserError, env_flag, os_error_message

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# command -> "module:function" under enat_lightning.commands, or {subcommand: "module:function"}
COMMANDS: dict[str, str | dict[str, str]] = {
    "models": "models:models",
    "sample": "sample:sample",
    "import-official": "import_official:import_official",
    "tokenize": {"imagefolder": "tokenize:imagefolder", "list": "tokenize:image_list", "coco": "tokenize:coco",
                 "demo": "tokenize:demo"},
    "evaluate": "evaluate:evaluate",
    "fid-stats": "fid_stats:fid_stats",
    "flops": "flops:flops",
    "analyze": {"similarity": "analyze:similarity", "attention-maps": "analyze:attention_maps",
                "attention": "analyze:attention"},
    "study": {"run": "study:run", "plan": "study:plan"},
    "demo": "demo:demo",
    "export": "export:export",
    "app": "app:app",
    "tokenizer": {"evaluate": "tokenizer:evaluate", "export": "tokenizer:export"},
}
# Only UserError (and its InvalidInput / MissingInput, raised where the input is checked) is the user's
# mistake: one line, exit code 2. Any other exception -- a KeyError or ValueError included -- is a bug
# in this package and shows its traceback.
USER_ERRORS = (UserError,)


def command_function(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(f"enat_lightning.commands.{module}"), name)


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def build_parser():
    """The whole ``enat`` tree (for ``enat --help`` and tests); ``main`` builds only the command it runs."""
    from jsonargparse import ArgumentParser

    root = ArgumentParser(prog="enat", exit_on_error=False,
                          description="Train, sample, evaluate and analyse ENAT / NAT image generators.",
                          epilog="Training: enat fit -c experiments/enat_s.yaml (LightningCLI; also validate, "
                                 "test). Every command takes -c FILE.yaml and --print_config. Set ENAT_DEBUG=1 "
                                 "for full tracebacks.")
    subs = root.add_subcommands(required=False, dest="command")
    for name in LIGHTNING_SUBCOMMANDS[:3]:
        subs.add_subcommand(name, ArgumentParser(prog=f"enat {name}", add_help=False),
                            help=f"LightningCLI {name} (enat {name} --help)")
    for name, target in COMMANDS.items():
        if isinstance(target, str):
            fn = command_function(target)
            subs.add_subcommand(name, command_parser(fn, f"enat {name}"), help=_summary(fn))
            continue
        module = importlib.import_module(f"enat_lightning.commands.{next(iter(target.values())).split(':')[0]}")
        group = ArgumentParser(prog=f"enat {name}", description=_summary(module), exit_on_error=False)
        subs.add_subcommand(name, group, help=_summary(module))  # jsonargparse: outer level first
        inner = group.add_subcommands(required=True, dest="action")
        for sub, sub_target in target.items():
            fn = command_function(sub_target)
            inner.add_subcommand(sub, command_parser(fn, f"enat {name} {sub}"), help=_summary(fn))
    return root


def parse(argv: list[str]) -> tuple[Callable, dict]:
    """``["sample", "--ckpt", "x.ckpt", ...]`` -> (command function, its keyword arguments).

    Raises ``UserError`` (one line) for an unknown command or option or a bad value; ``--help`` and
    ``--print_config`` print and raise ``SystemExit(0)``.
    """
    from jsonargparse import ArgumentError

    name, rest = argv[0], list(argv[1:])
    target = COMMANDS.get(name)
    if target is None:
        raise UserError(f"unknown command {name!r}; commands: {', '.join([*LIGHTNING_SUBCOMMANDS[:3], *COMMANDS])} "
                        f"(enat --help)")
    prog = f"enat {name}"
    if isinstance(target, dict):
        if not rest or rest[0] in ("-h", "--help"):
            build_parser().parse_args([name, "--help"])
        sub = rest.pop(0)
        if sub not in target:
            raise UserError(f"enat {name}: unknown {sub!r}; choose one of {', '.join(target)}")
        target, prog = target[sub], f"{prog} {sub}"
    fn = command_function(target)
    parser = command_parser(fn, prog)
    extra: list[str] = []
    if "--" in rest and "lightning_args" in inspect.signature(fn).parameters:
        rest, extra = rest[:rest.index("--")], rest[rest.index("--") + 1:]
    try:
        cfg = parser.parse_args(normalize_argv(parser, rest, fn))
        init = (getattr(parser, "instantiate", None) or parser.instantiate_classes)(cfg)  # jsonargparse < 4.49
    except ArgumentError as e:
        raise UserError(one_line_error(prog, parser, e)) from e
    kwargs = {k: v for k, v in vars(init).items() if k not in ("config", "__path__")}
    if extra:
        kwargs["lightning_args"] = [*(kwargs.get("lightning_args") or []), *extra]
    return fn, kwargs


def _guarded(fn, *args, **kwargs) -> int:
    """Runs fn; a user-facing error becomes one clear line and exit code 2 (ENAT_DEBUG=1: the traceback)."""
    try:
        rc = fn(*args, **kwargs)
        return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
    except BrokenPipeError:  # `enat flops | head`: the reader left; nothing to report
        try:  # Python docs' recipe: no second BrokenPipeError when stdout is flushed at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except USER_ERRORS as e:
        if env_flag("ENAT_DEBUG"):
            raise
        print(f"enat: error: {' '.join(str(e).split())}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except OSError as e:  # the file and the real cause; disk-full advice only for ENOSPC (errors.py)
        if env_flag("ENAT_DEBUG"):
            raise
        print(f"enat: error: {os_error_message(e)}", file=sys.stderr)
        return 2


def _run_command(argv: list[str]) -> int:
    try:
        fn, kwargs = parse(argv)
    except SystemExit as e:  # --help, --print_config
        return e.code if isinstance(e.code, int) else 0
    return _guarded(fn, **kwargs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from enat_lightning.training_cli import run_lightning_cli
        return _guarded(run_lightning_cli, argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return _guarded(_run_command, argv)


def lightning_main(argv: list[str] | None = None) -> int:
    """The ``lightning`` command: ``lightning fit -c experiments/enat_s.yaml`` etc."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in LIGHTNING_SUBCOMMANDS:
        print(f"usage: lightning {{{','.join(LIGHTNING_SUBCOMMANDS)}}} -c CONFIG.yaml [...]", file=sys.stderr)
        return 2
    from enat_lightning.training_cli import run_lightning_cli
    return _guarded(run_lightning_cli, argv)


if __name__ == "__main__":
    sys.exit(main())
