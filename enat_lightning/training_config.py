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
from typing import Iterable

from enat_lightning.errors import MissingInput, UserError


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


def resolve_training_config(configs: Iterable[str | os.PathLike], overrides: Iterable[str] = ()) -> dict:
    """The config ``enat fit -c configs[0] -c configs[1] ... --key=value ...`` would run, as a dict.

    ``overrides``: ``"trainer.max_steps=50"`` items (LightningCLI's dotted keys). Errors (missing file,
    unknown key, bad value) are one-line ``UserError``s naming the files.
    """
    from enat_lightning.module import ENATModule
    from enat_lightning.training_cli import ENATLightningCLI

    configs = [Path(c) for c in configs]
    for c in configs:
        if not c.is_file():
            raise MissingInput(f"config file {c} does not exist (the training configs are in experiments/)")
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
