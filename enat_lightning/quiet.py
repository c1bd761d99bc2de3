"""What the package silences in its dependencies' output, in one place (bottom layer: logging/warnings only).

- Lightning's "💡 Tip: ... litlogger / litmodels" advertisements (info records of its rank-zero logger):
  filtered once, when ``enat_lightning`` is imported, so no command prints them.
- warnings we know to be harmless for this project (``quiet_known_warnings``, called by the training
  entry points).
"""
from __future__ import annotations

import logging
import warnings

_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip:")


def silence_lightning_tips() -> None:
    """Drop Lightning's "💡 Tip" adverts (litlogger, litmodels) through the public logging API. Idempotent."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_an_advert not in logger.filters:
            logger.addFilter(_not_an_advert)


def quiet_known_warnings() -> None:
    # The EMA copy is kept in eval mode on purpose (it is the no-dropout reuse teacher).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
