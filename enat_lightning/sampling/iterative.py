"""Iterative parallel decoding (MaskGIT / ENAT sampler) with computation reuse and CFG.

Shape letters: B batch, L = grid**2 tokens (raster order), Lm masked tokens in a step's input,
V codebook size, D width, S steps. Every option comes from one ``SamplerSettings`` (settings.py);
the per-step numbers (masked counts n_s, temperatures, guidance weights w_s) from its ``plan``.

One step s = 0 .. S-1 (official ``NATSchedule.generate`` semantics with the default settings,
fixtures README §1):
  1. one forward over the current ids: conditional and unconditional rows batched as 2B rows,
     each half passing its own previous output as the reuse state (after a step without the
     unconditional rows, the conditional state serves both halves). No unconditional pass where
     w_s = 0; on ``uncond_skip_steps`` the last residual cond - uncond (at positions still masked)
     stands in for it;
  2. logp = log_softmax(cond + w_s (cond - uncond)); the default linear ramp w_s = s/S * cfg_scale
     leaves step 0 unguided because the official code updates w at the *end* of a step;
  3. draw a token at every masked position from Categorical(logp / tau_samp) (Gumbel-max),
     tau_samp = max(samp_temp (1 - (s+1)/S), 1e-3);
  4. priority of every masked position (``order``): confidence = logp of the drawn token +
     tau_mask * Gumbel noise, tau_mask = mask_temp (1 - (s+1)/S); or a random / Halton order fixed
     before the first step; +inf at visible positions;
  5. re-mask the n_{s+1} lowest-priority positions (schedule); visible tokens never change.

Editing (``init_ids``): tokens given in ``init_ids`` stay fixed and visible from step 0; the
schedule counts only the [MASK] positions of ``init_ids`` (the region).

Randomness comes only from the ``torch.Generator`` passed in (random order first, then per step
token draws and re-mask noise, in that order).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from enat_lightning.errors import UserError
from enat_lightning.models.tokens import ENATOutput, check_ids, split_positions

from .noise import Generators, gumbel  # noqa: F401  (gumbel re-exported)
from .orders import OrderContext, get_order
from .settings import SAMP_TEMP_FLOOR, SamplerSettings  # noqa: F401  (SAMP_TEMP_FLOOR re-exported)
from .stepper import as_stepper


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
                 (uncond_logits is None where no unconditional pass ran: w = 0 or a skipped step)
    uncond_ran:  whether this step ran the unconditional rows
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
    uncond_ran: bool = False


@dataclass
class GenerationTrace:
    steps: list[StepTrace] = field(default_factory=list)

    def stack(self, name: str) -> torch.Tensor:
        """One StepTrace field stacked over steps, e.g. ``stack("input_ids")`` -> (S, B, L)."""
        values = [getattr(s, name) for s in self.steps]
        if any(v is None for v in values):
            raise ValueError(f"trace field {name!r} was not recorded at every step")
        return torch.stack(values)


def _concat(a: ENATOutput, b: ENATOutput) -> ENATOutput:
    lf = None if a.layer_feats is None else torch.cat([a.layer_feats, b.layer_feats], dim=1)
    return ENATOutput(torch.cat([a.logits, b.logits]), torch.cat([a.feat, b.feat]),
                      torch.cat([a.masking, b.masking]), lf, a.num_masked)


def resolve_settings(settings: SamplerSettings | None, overrides: dict) -> SamplerSettings:
    """``settings`` with keyword overrides (field names of SamplerSettings only)."""
    settings = SamplerSettings() if settings is None else settings
    if not isinstance(settings, SamplerSettings):
        raise TypeError(f"settings must be a SamplerSettings, got {type(settings).__name__}")
    if overrides:
        known = {f.name for f in dataclasses.fields(SamplerSettings)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"generate() got unknown sampler settings {unknown}; known: {sorted(known)}")
        settings = dataclasses.replace(settings, **overrides)
    return settings


def _prev_pair(cond_state: ENATOutput, last: ENATOutput | None) -> ENATOutput:
    """The 2B-row reuse state: the last batched output when the previous step ran both halves;
    otherwise the conditional state stands in for the unconditional rows. That happens after a step
    without an unconditional pass (step 0 with nothing visible, where the state would be empty; a
    step with weight 0; a skipped step): an older unconditional state would hold a different number
    of masked tokens than this step's rows, and the batched forward needs one count per batch."""
    if last is not None:
        return last
    return _concat(cond_state, cond_state)


class NonFiniteLogitsError(UserError, ValueError):
    """Sampling met NaN / inf logits: the weights are not finite (a diverged run) or a setting overflows.
    Never turned into tokens: argmax over NaN picks id 0, which scores deceptively well."""


def check_finite_logits(finite: list[torch.Tensor], weights, settings: SamplerSettings, model) -> None:
    """The one numerics check of sampling: raises NonFiniteLogitsError naming the first bad step, its
    guidance weight, the settings and the checkpoint (``model.checkpoint_path``, set by the loader)."""
    if not finite:
        return
    ok = torch.stack(finite)  # (S, B)
    if bool(ok.all()):  # one device sync per generate call
        return
    step = int((~ok).any(1).nonzero()[0])
    source = getattr(model, "checkpoint_path", None)
    who = f"checkpoint {source}" if source else "the network"
    raise NonFiniteLogitsError(
        f"non-finite logits (NaN/inf) at sampling step {step} of {len(finite)} ({int((~ok[step]).sum())} of "
        f"{ok.shape[1]} samples; guidance weight {weights[step]:g} from cfg_scale {settings.cfg_scale:g}, "
        f"samp_temp {settings.samp_temp:g}): {who} produced them or a setting overflows float; check the "
        f"checkpoint's weights (a diverged run) and lower --sampler.cfg_scale / raise --sampler.samp_temp")


@torch.no_grad()
def generate(model, labels, settings: SamplerSettings | None = None, *, generator: Generators = None,
             init_ids: torch.Tensor | None = None, return_trace: bool = False, trace_logits: bool = False,
             **overrides):
    """Sample token grids for the condition ``labels`` -> ids (B, grid, grid) int64.

    ``settings``: the sampler options (``SamplerSettings()`` = the official sampler); keyword
    ``overrides`` replace single fields (``generate(model, y, steps=4)`` is
    ``generate(model, y, dataclasses.replace(SamplerSettings(), steps=4))``). ``model`` is a
    ``Stepper`` (stepper.py: conditions, one forward, the grid) or a network of ``models/`` (ENAT,
    NAT, text ENAT), which is wrapped in ``NetworkStepper``. ``labels``: class ids (B,) for a class
    model, ``Captions`` for a text model; the stepper turns them into the condition once for all
    steps, plus the unconditional one (null label / empty caption) for the CFG rows. The forward
    gets ``num_masked``, the step's [MASK] count from the schedule, so the network reads nothing
    back to validate it. ``init_ids`` (B, L) or (B, grid, grid): editing
    -- its tokens stay fixed, its [MASK] positions (the stepper's ``mask_id``, the same number in every
    row) are generated. With ``return_trace`` the result is ``(ids, GenerationTrace)``;
    ``trace_logits`` also records full (B, L, V) logits (the normal path computes the output head at
    masked positions only) and runs the unconditional pass at every guided step. ``generator`` is one
    generator for the batch or a list of B (one per sample: ``seeding.sample_generators``), so a sample
    does not depend on its batch. The token order is the registered function ``settings.order``
    (orders.py).
    """
    settings = resolve_settings(settings, overrides)
    stepper = as_stepper(model)
    L, mask_id, device = stepper.seq_len, stepper.mask_id, stepper.device
    make_order = get_order(settings.order)
    guided = settings.guided
    condition, both_conditions = stepper.conditions(labels, guided)  # B rows; 2B rows [cond ; null] if guided
    B = len(condition)
    if init_ids is None:
        ids = torch.full((B, L), mask_id, dtype=torch.long, device=device)  # (B, L)
    else:
        ids = torch.as_tensor(init_ids).to(device).reshape(len(init_ids), -1).long()
        check_ids(ids, L, mask_id)
        if ids.shape[0] != B:
            raise ValueError(f"init_ids has {ids.shape[0]} rows but there are {B} conditions")
        split_positions(ids == mask_id, "[MASK] tokens in init_ids (the region to generate)")
    n_region = int((ids[0] == mask_id).sum()) if B else L
    plan = settings.plan(n_region)
    steps, counts, weights = settings.steps, plan.counts, plan.weights
    # The step-0 unconditional pass is skipped where its weight is 0 and its reuse state would be
    # empty (nothing visible); trace_logits keeps it (the parity fixture records it).
    empty_state0 = n_region == L and stepper.empty_state_when_all_masked

    def runs_uncond(s: int) -> bool:
        if not guided or s in plan.skip_uncond:
            return False
        return weights[s] != 0 or trace_logits or (s == 0 and not empty_state0)

    logits_at = "all" if trace_logits else "masked"
    trace = GenerationTrace() if return_trace else None
    reuse = settings.reuse

    with stepper.sampling():
        # the order's rule; an order fixed before sampling draws its randomness here, before any step
        priority = make_order(OrderContext(batch=B, grid=stepper.grid, device=device, generator=generator))
        sampled = ids
        finite = []  # per step: were all logits finite? (B,) bools, read once after the loop: no sync per step
        cond_state = pair = None  # reuse states: conditional B rows; the last 2B-row output if the step ran both
        resid = resid_masking = None  # last cond - uncond at that step's masked positions
        for s in range(steps):
            w = weights[s]
            tau_mask, tau_samp = plan.mask_temps[s], plan.samp_temps[s]
            both = runs_uncond(s)
            if both:
                prev = _prev_pair(cond_state, pair) if reuse and cond_state is not None else None
                out = stepper(torch.cat([ids, ids]), both_conditions, prev, logits_at,
                              num_masked=counts[s])  # 2B rows: cond then uncond
                cond, uncond = out.logits[:B], out.logits[B:]  # (B, Lm|L, V)
                if reuse:
                    cond_state, pair = out.select(slice(0, B)), out
            else:
                prev = cond_state if reuse else None
                out = stepper(ids, condition, prev, logits_at, num_masked=counts[s])
                cond, uncond = out.logits, None
                if reuse:
                    cond_state, pair = out, None

            masking = ids == mask_id  # (B, L)
            _, mask_idx = split_positions(masking, "masked tokens", counts[s])  # (B, Lm)
            take = (lambda t: torch.gather(t, 1, mask_idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))) \
                if trace_logits else (lambda t: t)
            cond_m = take(cond)  # (B, Lm, V)
            if uncond is not None:
                diff = cond_m - take(uncond)  # (B, Lm, V)
                resid, resid_masking = diff, masking
                mixed = cond_m if w == 0.0 else cond_m + w * diff
            elif w != 0.0 and s in plan.skip_uncond:
                # rank of each current masked position among the masked positions of the residual's
                # step (masked sets only shrink, so every current position is there)
                pos = (resid_masking.long().cumsum(1) - 1).gather(1, mask_idx)  # (B, Lm)
                mixed = cond_m + w * torch.gather(resid, 1, pos.unsqueeze(-1).expand(-1, -1, resid.shape[-1]))
            else:
                mixed = cond_m
            logp = F.log_softmax(mixed, dim=-1)  # (B, Lm, V)
            finite.append(torch.isfinite(logp).flatten(1).all(1))  # (B,)
            tokens = (logp / tau_samp + gumbel(logp.shape, generator, device)).argmax(-1)  # (B, Lm)
            sampled = ids.scatter(1, mask_idx, tokens)  # (B, L)
            conf = torch.full((B, L), float("inf"), device=device)
            conf.scatter_(1, mask_idx, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))  # (B, L)
            if trace is not None:
                trace.steps.append(StepTrace(
                    input_ids=ids, sampled_ids=sampled, cond_feat=out.feat[:B], confidence=conf.clone(),
                    num_masked=counts[s], cfg_weight=w, had_prev=prev is not None,
                    cond_logits=cond if trace_logits else None,
                    uncond_logits=uncond if trace_logits else None, uncond_ran=both))
            conf = priority(conf, masking, tau_mask)  # (B, L), +inf at visible positions
            n_next = counts[s + 1]
            if n_next > 0:
                remask = torch.argsort(conf, dim=1, stable=True)[:, :n_next]  # (B, n_next) lowest first
                ids = sampled.scatter(1, remask, mask_id)
            else:
                ids = sampled
    check_finite_logits(finite, weights, settings, getattr(stepper, "net", model))
    out_ids = sampled.reshape(B, stepper.grid, stepper.grid)
    return (out_ids, trace) if return_trace else out_ids
