"""Console entry points ``enat`` and ``lightning``: a table of commands, no logic.

``fit`` / ``validate`` / ``test`` go to LightningCLI (``enat_lightning.training_cli``); every other
command is a module in ``enat_lightning/commands/`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, each a thin wrapper over one library function.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from enat_lightning.errors import UserError

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# command name -> module under enat_lightning.commands
COMMANDS = {
    "models": "models",
    "sample": "sample",
    "import-official": "import_official",
    "tokenize": "tokenize",
    "evaluate": "evaluate",
    "fid-stats": "fid_stats",
    "flops": "flops",
    "analyze": "analyze",
    "study": "study",
    "demo": "demo",
}


def _available_commands() -> dict[str, str]:
    return {name: mod for name, mod in COMMANDS.items()
            if importlib.util.find_spec(f"enat_lightning.commands.{mod}") is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enat", description="Train, sample, evaluate and analyse ENAT / NAT image generators.",
        epilog="Training: enat fit -c experiments/enat_s.yaml (LightningCLI; also validate, test). "
               "Set ENAT_DEBUG=1 for full tracebacks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_SUBCOMMANDS[:3]:
        sub.add_parser(name, help=f"LightningCLI {name} (enat {name} --help)", add_help=False)
    for name, mod in _available_commands().items():
        module = importlib.import_module(f"enat_lightning.commands.{mod}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _guarded(fn, *args) -> int:
    """Runs fn; a user-facing error becomes one clear line and exit code 2."""
    try:
        rc = fn(*args)
        return 0 if rc is None else int(rc)
    except (UserError, ValueError, FileNotFoundError, KeyError) as e:
        if os.environ.get("ENAT_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"enat: error: {msg}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from enat_lightning.training_cli import run_lightning_cli
        return _guarded(run_lightning_cli, argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0 if not argv else 2
    return _guarded(args.run, args)


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
