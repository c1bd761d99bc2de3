"""Composed training YAMLs resolved by the parser ``enat fit`` uses: the one YAML resolution of the package.

``resolve_training_config(["experiments/enat_s.yaml", "more.yaml"], ["trainer.max_steps=50"])`` gives
exactly what ``enat fit -c experiments/enat_s.yaml -c more.yaml --trainer.max_steps=50`` would train:
later files override earlier ones, dotted overrides come last, interpolations and class_path choices
are resolved, defaults filled in, unknown keys and wrong types rejected, all by LightningCLI's own
parser (``enat_lightning.training_cli.ENATLightningCLI``). Nothing is instantiated and nothing runs:
``sample``, ``flops``, ``analyze`` and ``study`` read the model from it without building a Trainer or
touching the data.

The result is a plain dict; ``model.net`` is in the one config form ``{"class_path": ..., "init_args": ...}``.
"""
from __future__ import annotations

import logging
import os
import random
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from enat_lightning.config_files import config_files, read_config_file  # noqa: F401  (re-exported)
from enat_lightning.errors import UserError


@contextmanager
def _no_global_side_effects():
    """LightningCLI seeds every RNG from ``seed_everything`` while parsing; a resolution must not."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*seed set to.*")
            # args= is passed on purpose while sys.argv holds our own command (`enat flops ...`)
            warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
            yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        seed_log.setLevel(level)


def _override_arg(item: str) -> str:
    if "=" not in item:
        raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.max_steps=50")
    key, value = item.split("=", 1)
    return f"--{key.strip().lstrip('-')}={value}"


# Packages a ``class_path`` may name without importing user code: ours and the libraries we build on.
TRUSTED_PACKAGES = ("enat_lightning", "lightning", "pytorch_lightning", "lightning_fabric", "torch", "torchvision")
IMPORT_FLAG = "--import_code"


def _class_paths(node, where: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, class_path value) of every ``class_path`` in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            if k == "class_path" and isinstance(v, str):
                yield key, v
            else:
                yield from _class_paths(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _class_paths(v, f"{where}[{i}]")


def refuse_foreign_code(configs: Iterable[str | os.PathLike], overrides: Iterable[str] = (), *,
                        command: str = "this command") -> None:
    """The one check that a config read for information does not import user code.

    Resolving a config imports the module of every ``class_path`` (that is how jsonargparse finds the
    class), and importing a module runs it. ``enat fit``/``validate``/``test``/``study`` run the config,
    so they import what it names; commands that only read a config (``enat flops``, ``sample -c``,
    ``analyze -c``) accept only ``class_path``s inside ``TRUSTED_PACKAGES`` unless the user passes
    ``--import_code``. Raises UserError naming the file, the key and the module."""
    found = []
    for c in configs:
        found += [(str(c), k, v) for k, v in _class_paths(read_config_file(c))]
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip().lstrip("-").endswith("class_path"):
            found.append(("the command line", key.strip(), value.strip()))
    for where, key, value in found:
        top = value.split(".", 1)[0]
        if "." in value and top not in TRUSTED_PACKAGES:
            raise UserError(f"{where}: {key}: {value} is code outside enat_lightning and the libraries it uses; "
                            f"{command} reads configs without importing user code (importing a module runs it). "
                            f"If you trust that module, rerun with {IMPORT_FLAG}")


def resolve_training_config(configs: Iterable[str | os.PathLike], overrides: Iterable[str] = (), *,
                            import_code: bool = True, command: str = "this command") -> dict:
    """The config ``enat fit -c configs[0] -c configs[1] ... --key=value ...`` would run, as a dict.

    ``overrides``: ``"trainer.max_steps=50"`` items (LightningCLI's dotted keys). Errors (missing file,
    empty file or not a mapping, unknown key, bad value) are one-line ``UserError``s naming the files.
    ``import_code=False``: refuse a ``class_path`` outside the package before anything is imported
    (``refuse_foreign_code``), for commands that only read the config.
    """
    configs = [Path(c) for c in configs]
    for c in configs:
        read_config_file(c)
    if not import_code:
        refuse_foreign_code(configs, overrides, command=command)
    from enat_lightning.module import ENATModule
    from enat_lightning.training_cli import ENATLightningCLI

    args: list[str] = []
    for c in configs:
        args += ["-c", str(c)]
    args += [_override_arg(o) for o in overrides]

    class _ParseOnly(ENATLightningCLI):
        def instantiate_classes(self) -> None:  # public hook: parse and resolve, build nothing
            pass

    names = " -c ".join(str(c) for c in configs)
    with _no_global_side_effects():
        try:
            cli = _ParseOnly(ENATModule, datamodule_class=None, auto_configure_optimizers=False, run=False,
                             args=args, parser_kwargs={"exit_on_error": False})
        except SystemExit as e:  # a parser configured elsewhere may still exit; its message is above
            raise UserError(f"the training config -c {names} does not resolve (exit {e.code}); see the message "
                            f"above") from e
        except Exception as e:  # noqa: BLE001 - jsonargparse's ArgumentError and friends: one line
            msg = " ".join(str(e).split())
            raise UserError(f"the training config -c {names} does not resolve: {msg}") from e
    return cli.config.as_dict()


def get(config: dict, dotted: str, default=None):
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` when a part is missing (also under ``init_args``)."""
    node = config
    for part in dotted.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def model_config(config: dict):
    """The network config (``ModelConfig``) of a resolved training config (``model.net``)."""
    from enat_lightning.models import config_from_dict

    net = get(config, "model.net")
    if not isinstance(net, dict):
        raise UserError(f"the training config has no model.net mapping (got {net!r})")
    try:
        return config_from_dict(net)
    except (TypeError, ValueError) as e:
        raise UserError(f"model.net of the training config: {e}") from e


def trains_with_reuse(config: dict) -> bool:
    """Whether the run trains reuse-aware (``model.reuse_prob`` > 0) with a network that can reuse."""
    return float(get(config, "model.reuse_prob", 0.0) or 0.0) > 0 and model_config(config).supports_reuse
