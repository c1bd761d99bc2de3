"""``enat fit|validate|test`` and ``lightning fit``: LightningCLI over ENATModule.

Configs: ``model:`` holds ENATModule's arguments (``model.net`` with ``class_path`` ENATConfig or
NATConfig and its fields as ``init_args``); ``data:`` any LightningDataModule by class_path;
``trainer:`` the Trainer. Several ``-c`` files compose, later ones overriding earlier ones.
Parsing and instantiation happen before any training: an unknown key or wrong type exits with
jsonargparse's message naming the key; a bad value raises ValueError naming the YAML key.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from enat_lightning.errors import UserError
from enat_lightning.module import ENATModule, NonFiniteLossError


class ENATLightningCLI(LightningCLI):
    """LightningCLI with the project's defaults (the optimizer is configured by ENATModule)."""

    def _parse_ckpt_path(self) -> None:
        # LightningCLI re-parses a checkpoint's hyper-parameters into the config when --ckpt_path
        # names a file. Ours store ``net`` as ``cfg.to_dict()`` (so `enat sample` needs no YAML);
        # translate it to the class_path form jsonargparse reads, then let Lightning carry on.
        import torch

        from enat_lightning.models import config_from_dict

        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        for key in ("_instantiator", "_class_path"):
            hparams.pop(key, None)
        if isinstance(hparams.get("net"), dict) and "arch" in hparams["net"]:
            cfg = config_from_dict(hparams["net"])
            hparams["net"] = {"class_path": f"{type(cfg).__module__}.{type(cfg).__name__}",
                              "init_args": dataclasses.asdict(cfg)}
        # only constructor arguments: callbacks add records of their own (e.g. "flops")
        accepted = inspect.signature(ENATModule.__init__).parameters
        hparams = {k: v for k, v in hparams.items() if k in accepted}
        if hparams:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)


class SaveConfigWithTensorBoard(SaveConfigCallback):
    """Saves the resolved config beside the logs (LightningCLI default) and also as TensorBoard text,
    so a run's panels say exactly what produced them."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # indented lines: TensorBoard renders text as Markdown, this keeps the YAML verbatim
                logger.experiment.add_text("config", "\n".join("    " + line for line in text.splitlines()))


def _quiet_known_warnings() -> None:
    # The EMA copy is kept in eval mode on purpose (it is the no-dropout reuse teacher).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run_lightning_cli(argv: list[str]) -> int:
    """Runs LightningCLI on argv (``["fit", "-c", "experiments/enat_s.yaml", ...]``) -> exit code."""
    _quiet_known_warnings()
    # LightningCLI reads sys.argv (passing args= as well makes it warn): present argv there.
    saved_argv, sys.argv = sys.argv, [sys.argv[0] if sys.argv else "enat", *argv]
    try:
        ENATLightningCLI(
            ENATModule,
            datamodule_class=None,  # any LightningDataModule, chosen by class_path in the YAML
            auto_configure_optimizers=False,
            # a resumed run writes its resolved config again into its own log dir
            save_config_callback=SaveConfigWithTensorBoard,
            save_config_kwargs={"overwrite": True},
        )
    except SystemExit as e:  # jsonargparse reports config errors (with the key) and exits
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except NonFiniteLossError as e:
        raise UserError(str(e)) from e
    finally:
        sys.argv = saved_argv
    return 0
