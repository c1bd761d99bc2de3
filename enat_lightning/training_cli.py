"""``enat fit|validate|test`` and ``lightning fit``: LightningCLI over ENATModule.

Configs: ``model:`` holds ENATModule's arguments (``model.net`` with ``class_path`` ENATConfig or
NATConfig and its fields as ``init_args``); ``data:`` any LightningDataModule by class_path;
``trainer:`` the Trainer. Several ``-c`` files compose, later ones overriding earlier ones.
Parsing and instantiation happen before any training: an unknown key or wrong type exits with
jsonargparse's message naming the key; a bad value raises ValueError naming the YAML key.
"""
from __future__ import annotations

import sys
import warnings

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from enat_lightning.cli import UserError
from enat_lightning.module import ENATModule, NonFiniteLossError


class ENATLightningCLI(LightningCLI):
    """LightningCLI with the project's defaults (the optimizer is configured by ENATModule)."""


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
