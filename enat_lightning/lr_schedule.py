"""Learning-rate multipliers shared by the generator (module.py) and the tokenizer trainer
(tokenizer_training/module.py): the official linear warm-up, then constant or a cosine decay."""
from __future__ import annotations

import math


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up then constant (U-ViT / official: min(step / warmup, 1)).

    REPRO: step 0 has factor 0, i.e. the very first update uses lr 0, as in the official schedule.
    """
    return 1.0 if warmup_steps <= 0 else min(step / warmup_steps, 1.0)


def lr_factor(step: int, warmup_steps: int, decay_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    """The learning-rate multiplier at ``step``: the official warm-up (``warmup_factor``), then constant
    when ``decay_steps`` is 0 (official), else a cosine from 1 at the end of the warm-up down to
    ``min_lr_ratio`` at step ``decay_steps``, and ``min_lr_ratio`` after it. A short run (the CPU demo)
    ends at a small learning rate, so its last weights do not depend on where the noise of a constant
    rate left them."""
    if decay_steps <= 0 or step <= warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = min((step - warmup_steps) / max(decay_steps - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
