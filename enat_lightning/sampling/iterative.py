"""Iterative parallel decoding (MaskGIT / ENAT sampler) with computation reuse and CFG.

Shape letters: B batch, L = grid**2 tokens (raster order), Lm masked tokens in a step's input,
V codebook size, D width, S steps.

One step s = 0 .. S-1 (official ``NATSchedule.generate`` semantics, fixtures README §1):
  1. one forward over the current ids: conditional and unconditional rows batched as 2B rows,
     each half passing its own previous output as the reuse state;
  2. logp = log_softmax(cond + w_s (cond - uncond)) with w_s = s/S * cfg_scale (linear ramp; step 0
     unguided because the official code updates w at the *end* of a step);
  3. draw a token at every masked position from Categorical(logp / tau_samp) (Gumbel-max),
     tau_samp = max(samp_temp (1 - (s+1)/S), 1e-3);
  4. confidence = logp of the drawn token (+inf at visible positions) + tau_mask * Gumbel noise,
     tau_mask = mask_temp (1 - (s+1)/S);
  5. re-mask the n_{s+1} lowest-confidence positions (schedule); visible tokens never change.

Randomness comes only from the ``torch.Generator`` passed in (token draws, then re-mask noise, in
that order per step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from enat_lightning.models.conditioning import Condition
from enat_lightning.models.tokens import ENATOutput, split_positions

from .schedules import Schedule, masked_counts

Generators = Optional[Union[torch.Generator, Sequence[torch.Generator]]]  # one for the batch, or one per sample

SAMP_TEMP_FLOOR = 1e-3  # REPRO: official floor on the annealed sampling temperature


@dataclass
class StepTrace:
    """What one sampling step saw and decided (for analysis tools and parity tests).

    input_ids:   (B, L) ids fed to the network (mask_id = [MASK])
    sampled_ids: (B, L) ids after drawing every masked position (before re-masking)
    cond_feat:   (B, L, D) features of the conditional pass (``ENATOutput.feat``)
    confidence:  (B, L) logp of the drawn token, +inf at visible positions, before the Gumbel noise
    num_masked:  masked tokens in input_ids (same for every row)
    cfg_weight:  guidance weight w used at this step
    had_prev:    whether a reuse state was passed to the network
    cond_logits, uncond_logits: (B, L, V) network logits, only with ``trace_logits=True``
                 (uncond_logits is None where no unconditional pass ran, i.e. cfg_scale == 0)
    """

    input_ids: torch.Tensor
    sampled_ids: torch.Tensor
    cond_feat: torch.Tensor
    confidence: torch.Tensor
    num_masked: int
    cfg_weight: float
    had_prev: bool
    cond_logits: torch.Tensor | None = None
    uncond_logits: torch.Tensor | None = None


@dataclass
class GenerationTrace:
    steps: list[StepTrace] = field(default_factory=list)

    def stack(self, name: str) -> torch.Tensor:
        """One StepTrace field stacked over steps, e.g. ``stack("input_ids")`` -> (S, B, L)."""
        values = [getattr(s, name) for s in self.steps]
        if any(v is None for v in values):
            raise ValueError(f"trace field {name!r} was not recorded at every step")
        return torch.stack(values)


def gumbel(shape: tuple[int, ...], generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise drawn on the generator's device, returned on ``device``.

    ``generator`` may be a sequence of generators, one per row (``shape[0]``): row i then draws only
    from generator i, so a sample's noise does not depend on its batch (``seeding.sample_generators``).
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
        return torch.cat([gumbel((1, *shape[1:]), g, device) for g in generator])
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device)
    u.clamp_(min=torch.finfo(u.dtype).tiny)  # rand may return exactly 0 -> -log(-log 0) = -inf
    return (-torch.log(-torch.log(u))).to(device)


def _concat(a: ENATOutput, b: ENATOutput) -> ENATOutput:
    lf = None if a.layer_feats is None else torch.cat([a.layer_feats, b.layer_feats], dim=1)
    return ENATOutput(torch.cat([a.logits, b.logits]), torch.cat([a.feat, b.feat]),
                      torch.cat([a.masking, b.masking]), lf)


def _state_is_empty_when_all_masked(model) -> bool:
    """True if a reuse state from an all-[MASK] input carries no information (R is empty).

    ENAT reads only previously *visible* features (default ``reuse_tokens="visible"``); NAT ignores
    ``prev``. Then the unconditional pass of step 0 (weight 0, nothing visible) can be skipped and
    the conditional state stands in for it at step 1. With ``reuse_tokens="all"`` it cannot.
    """
    return getattr(model.cfg, "reuse_tokens", "visible") == "visible"


@torch.no_grad()
def generate(model, labels, *, steps: int = 8, cfg_scale: float = 0.0, mask_temp: float = 1.5,
             samp_temp: float = 6.0, schedule: Schedule = "cosine", reuse: bool = True,
             generator: Generators = None, return_trace: bool = False,
             trace_logits: bool = False):
    """Sample token grids for the condition ``labels`` -> ids (B, grid, grid) int64.

    ``model`` is an ENAT or NAT (the conditioning interface of ``models/conditioning.py`` and the
    ``(ids, cond, prev, logits_at)`` call). ``labels``: class ids (B,) for a class model,
    ``Captions`` for a text model; ``model.prepare_condition`` turns them into the condition once
    for all steps and ``model.null_condition`` gives the unconditional one (null label / empty
    caption) for the CFG rows. ``reuse=False``
    never passes the previous output (the paper's "w/o reuse" rows). With ``return_trace`` the
    result is ``(ids, GenerationTrace)``; ``generator`` is one generator for the batch or a list of B
    (one per sample, see ``gumbel``); ``trace_logits`` also records full (B, L, V) logits (the
    normal path computes the output head at masked positions only).
    """
    cfg = model.cfg
    L, mask_id = cfg.seq_len, cfg.mask_id
    device = next(model.parameters()).device
    condition = model.prepare_condition(labels)  # B rows: label embeddings / caption keys+values, once
    B = len(condition)
    if mask_temp < 0 or samp_temp < 0 or cfg_scale < 0:
        raise ValueError(f"mask_temp, samp_temp and cfg_scale must be >= 0, got {mask_temp}, {samp_temp}, {cfg_scale}")
    counts = masked_counts(L, steps, schedule)  # (S+1,)
    guided = cfg_scale != 0.0
    skip_uncond0 = guided and not trace_logits and _state_is_empty_when_all_masked(model)
    logits_at = "all" if trace_logits else "masked"
    trace = GenerationTrace() if return_trace else None
    # 2B rows for the guided passes: the condition, then the null condition of the same rows
    both_conditions = Condition.cat([condition, model.null_condition(condition)]) if guided else None

    was_training = model.training
    model.eval()
    try:
        ids = torch.full((B, L), mask_id, dtype=torch.long, device=device)  # (B, L)
        sampled = ids
        state: ENATOutput | None = None  # previous output, B rows (cond) or 2B rows (cond; uncond)
        w = 0.0
        for s in range(steps):
            ratio = 1.0 * (s + 1) / steps
            tau_mask = mask_temp * (1 - ratio)
            tau_samp = max(samp_temp * (1 - ratio), SAMP_TEMP_FLOOR)
            both = guided and not (s == 0 and skip_uncond0)
            prev = state if reuse else None
            if both and prev is not None and prev.feat.shape[0] == B:
                prev = _concat(prev, prev)  # step-0 state had no visible tokens: nothing to reuse
            if both:
                out = model(torch.cat([ids, ids]), both_conditions, prev=prev,
                            logits_at=logits_at)  # 2B rows: cond then uncond
                cond, uncond = out.logits[:B], out.logits[B:]  # (B, Lm|L, V)
            else:
                out = model(ids, condition, prev=prev, logits_at=logits_at)
                cond, uncond = out.logits, None
            state = out if reuse else None

            masking = ids == mask_id  # (B, L)
            _, mask_idx = split_positions(masking, "masked tokens")  # (B, Lm)
            take = (lambda t: torch.gather(t, 1, mask_idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))) \
                if trace_logits else (lambda t: t)
            cond_m = take(cond)  # (B, Lm, V)
            mixed = cond_m if uncond is None or w == 0.0 else cond_m + w * (cond_m - take(uncond))
            logp = F.log_softmax(mixed, dim=-1)  # (B, Lm, V)
            tokens = (logp / tau_samp + gumbel(logp.shape, generator, device)).argmax(-1)  # (B, Lm)
            sampled = ids.scatter(1, mask_idx, tokens)  # (B, L)
            conf = torch.full((B, L), float("inf"), device=device)
            conf.scatter_(1, mask_idx, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))  # (B, L)
            if trace is not None:
                trace.steps.append(StepTrace(
                    input_ids=ids, sampled_ids=sampled, cond_feat=out.feat[:B], confidence=conf.clone(),
                    num_masked=counts[s], cfg_weight=w, had_prev=prev is not None,
                    cond_logits=cond if trace_logits else None,
                    uncond_logits=uncond if trace_logits else None))
            if tau_mask > 0:
                conf = conf + tau_mask * gumbel((B, L), generator, device)
            n_next = counts[s + 1]
            if n_next > 0:
                remask = torch.argsort(conf, dim=1, stable=True)[:, :n_next]  # (B, n_next) lowest first
                ids = sampled.scatter(1, remask, mask_id)
            else:
                ids = sampled
            w = ratio * cfg_scale  # REPRO: set at the end of step s, used from step s+1
    finally:
        model.train(was_training)
    out_ids = sampled.reshape(B, cfg.grid, cfg.grid)
    return (out_ids, trace) if return_trace else out_ids
