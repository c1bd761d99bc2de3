"""The stepping interface of the sampler: what ``generate`` needs from a network, and nothing more.

maskgit's ``decode(inputs, rng, tokens_to_logits, ...)`` takes a function; ours also threads the
ENAT reuse state and the CFG conditions, so it takes a small object (``Stepper``):

  grid, seq_len, mask_id, device   the token grid (L = grid**2), the [MASK] id, where ids live
  empty_state_when_all_masked      a reuse state made from an all-[MASK] input carries nothing
                                   (then step 0's unconditional pass may be skipped)
  conditions(raw, guided)          the condition of the B rows once for all steps, and (guided)
                                   the 2B rows [condition ; null condition] for the CFG passes
  __call__(ids, condition, prev, logits_at, num_masked) -> ENATOutput
                                   one forward: logits (at the masked positions or all), features
                                   and masking, passed back as ``prev`` at the next step
  sampling()                       a context manager around the whole loop (eval mode)

``NetworkStepper`` adapts every network of ``models/`` (ENAT, NAT, text ENAT: the conditioning
interface of ``models/conditioning.py``); ``generate`` wraps a network in it, so callers pass
either. The FLOP counter (``evaluation/flops.py``) is another Stepper.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Protocol, runtime_checkable

import torch

from enat_lightning.models.conditioning import Condition
from enat_lightning.models.tokens import ENATOutput


@runtime_checkable
class Stepper(Protocol):
    grid: int
    seq_len: int
    mask_id: int
    device: torch.device
    empty_state_when_all_masked: bool

    def conditions(self, raw: Any, guided: bool) -> tuple[Any, Any | None]: ...

    def __call__(self, ids: torch.Tensor, condition: Any, prev: ENATOutput | None, logits_at: str,
                 num_masked: int) -> ENATOutput: ...

    def sampling(self) -> ContextManager: ...


class NetworkStepper:
    """A ``models/`` network as a Stepper."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        cfg = net.cfg
        self.grid, self.seq_len, self.mask_id = cfg.grid, cfg.seq_len, cfg.mask_id
        self.device = next(net.parameters()).device
        # ENAT reads only previously *visible* features (default reuse_tokens="visible"); NAT ignores
        # prev. With reuse_tokens="all" the [MASK] features of step 0 are read at step 1.
        self.empty_state_when_all_masked = getattr(cfg, "reuse_tokens", "visible") == "visible"

    def conditions(self, raw, guided: bool):
        # label embeddings / caption keys+values once; every block's adaLN output is cached in the
        # condition at the first step (the condition does not change over the steps)
        condition = self.net.prepare_condition(raw).caching_modulation()
        both = Condition.cat([condition, self.net.null_condition(condition)]).caching_modulation() \
            if guided else None
        return condition, both

    def __call__(self, ids, condition, prev, logits_at, num_masked):
        return self.net(ids, condition, prev=prev, logits_at=logits_at, num_masked=num_masked)

    @contextlib.contextmanager
    def sampling(self):
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)


def as_stepper(model) -> Stepper:
    """``model`` itself if it is a Stepper, else a network wrapped in ``NetworkStepper``."""
    return model if isinstance(model, Stepper) else NetworkStepper(model)
