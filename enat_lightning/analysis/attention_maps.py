"""Attention maps (paper §3, Fig. 2a): who attends to whom while a network samples?

Shape letters: B batch, H heads, n query tokens of a block, Lk key tokens, L = grid**2, S steps, N blocks.

``F.scaled_dot_product_attention`` returns no weights, so forward pre-hooks on every ``SCAttention`` capture
its inputs ``(own, ctx, attn_mask)`` and the weights are recomputed from the module's own projections:
softmax(q k^T / sqrt(d)) with q = q(own), k = [kv.A(ctx) ; kv.B(own)] (keys half). Each query and key is
typed [MASK] or visible from the model call's input ids:
    NAT block        queries = keys = all L tokens (typed by the masking)
    ENAT encoder     queries = visible tokens (or the newly revealed ones under reuse), keys = [context ;
                     own]: no [MASK] queries, so the mask_to_* masses are NaN there
    ENAT decoder     queries = [MASK] tokens, keys = [visible tokens ; [MASK] tokens]
The reported quantity is the attention *mass*: for each query, the summed weight on keys of one kind,
averaged over heads, queries of one kind and samples. mask_to_visible is the channel the paper finds
indispensable (Fig. 2a; its inference-time cut is analysis/attention_removal.py).

Imports torch, numpy and (lazily) matplotlib only.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from enat_lightning.errors import InvalidInput
from enat_lightning.models.blocks import SCAttention, SelfCrossBlock

from .report import pyplot, save_figure, write_csv
from .similarity import analysis_conditions, layer_modules, seeded_batches

INTERACTIONS = ("mask_to_visible", "mask_to_mask", "visible_to_visible", "visible_to_mask")


# -- pure math --------------------------------------------------------------------------------------------
def attention_probs(attn: SCAttention, own: torch.Tensor, ctx: torch.Tensor | None = None,
                    attn_mask: torch.Tensor | None = None, ctx_kv: torch.Tensor | None = None) -> torch.Tensor:
    """The softmax weights an ``SCAttention`` forward uses: own (B, n, D), ctx (B, Lc, D), caption
    keys/values ctx_kv (B, T, 2D) -> (B, H, n, Lk).

    Keys are ordered [caption ; context ; own] exactly as in ``SCAttention.forward``. ``attn_mask``
    as there: bool (True = may attend) or additive float, broadcastable to (B, H, n, Lk).
    """
    B, n, D = own.shape
    H = attn.heads
    k = attn.kv.B(own)[..., :D]  # (B, n, D): keys are the first half of the 2D channels
    if ctx is not None and ctx.shape[1] > 0:
        k = torch.cat([attn.kv.A(ctx)[..., :D], k], dim=1)  # (B, Lc+n, D)
    if ctx_kv is not None:
        k = torch.cat([ctx_kv[..., :D], k], dim=1)  # (B, T+Lc+n, D)
    q = attn.q(own).view(B, n, H, -1).transpose(1, 2)  # (B, H, n, D/H)
    k = k.view(B, k.shape[1], H, -1).transpose(1, 2)  # (B, H, Lk, D/H)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, n, Lk)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    return scores.softmax(dim=-1)


def interaction_mass(probs: torch.Tensor, query_is_mask: torch.Tensor, key_is_mask: torch.Tensor,
                     key_is_text: torch.Tensor | None = None) -> dict:
    """Per-sample mean attention mass for the four query/key kinds.

    probs (B, H, n, Lk), query_is_mask (B, n), key_is_mask (B, Lk) -> {interaction: (B,)}; NaN for a
    sample without queries of that kind. "X_to_Y" = X queries' total weight on Y keys, averaged over
    heads and X queries (the two masses of one query kind sum to 1, less the weight on caption keys
    ``key_is_text`` (B, Lk) of a text model, which are neither visible nor [MASK]).
    """
    km = key_is_mask[:, None, None, :].to(probs.dtype)  # (B, 1, 1, Lk)
    kv = (~key_is_mask if key_is_text is None else ~key_is_mask & ~key_is_text)[:, None, None, :].to(probs.dtype)
    to_mask = (probs * km).sum(-1).mean(1)  # (B, n)
    to_visible = (probs * kv).sum(-1).mean(1)  # (B, n); summed, not 1 - to_mask: exact zeros stay 0
    out = {}
    for q_kind, q_sel in (("mask", query_is_mask), ("visible", ~query_is_mask)):
        count = q_sel.sum(1)  # (B,)
        for k_kind, mass in (("mask", to_mask), ("visible", to_visible)):
            total = (mass * q_sel.to(mass.dtype)).sum(1)
            out[f"{q_kind}_to_{k_kind}"] = torch.where(count > 0, total / count.clamp_min(1),
                                                       torch.full_like(total, float("nan")))
    return out


def key_share(query_is_mask: torch.Tensor, key_is_mask: torch.Tensor,
              key_is_text: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) share of visible keys: the mask_to_visible mass uniform attention would give."""
    visible = ~key_is_mask if key_is_text is None else ~key_is_mask & ~key_is_text
    return visible.float().mean(1)


# -- capture during sampling ---------------------------------------------------------------------------
def attention_modules(model) -> list[tuple[str, SCAttention, str]]:
    """(name, attention module, role) per block: role "all" (NAT), "encoder", "decoder" (ENAT)."""
    layers = layer_modules(model)  # the same blocks, names and roles as the similarity analysis
    if any(isinstance(b, SelfCrossBlock) for _, b, _ in layers):
        raise InvalidInput("attention maps support SC-attention blocks only; this model uses "
                         "attention='self_cross' (Table 6b), whose cross-attention bypasses SCAttention.forward")
    return [(name, b.attn, role) for name, b, role in layers]


def _kinds(role: str, masking: torch.Tensor, prev_masking: torch.Tensor | None, n: int, Lc: int):
    """(query_is_mask (rows, n), key_is_mask (rows, Lc + n)) for one attention call."""
    rows = masking.shape[0]
    if role == "all":
        return masking, masking
    if role == "decoder":  # queries: [MASK] tokens; keys: [visible context ; [MASK] tokens]
        q = torch.ones(rows, n, dtype=torch.bool, device=masking.device)
        return q, torch.cat([torch.zeros(rows, Lc, dtype=torch.bool, device=masking.device), q], dim=1)
    # encoder: visible queries; context = previous visible features, or (reuse_tokens="all") every
    # previous position, typed by the previous step's masking
    q = torch.zeros(rows, n, dtype=torch.bool, device=masking.device)
    if Lc == masking.shape[1] and prev_masking is not None:
        ctx_kind = prev_masking
    else:
        ctx_kind = torch.zeros(rows, Lc, dtype=torch.bool, device=masking.device)
    return q, torch.cat([ctx_kind, q], dim=1)


@dataclass
class AttentionRecorder:
    """Per model call: {interaction: (N, rows)} masses and the visible-key share (N, rows)."""

    names: list[str]
    calls: list[dict] = field(default_factory=list)


@contextmanager
def record_attention(model):
    """Within the block every forward of ``model`` appends its per-block attention masses.

    Forward pre-hooks only; the weights are recomputed under ``no_grad`` and reduced at once, so no
    (B, H, n, Lk) tensor outlives its block.
    """
    layers = attention_modules(model)
    rec = AttentionRecorder([n for n, _, _ in layers])
    mask_id = model.cfg.mask_id
    state: dict = {}
    handles = []

    def model_pre(_module, args, kwargs):
        ids = args[0] if args else kwargs["ids"]
        prev = kwargs.get("prev", args[2] if len(args) > 2 else None)
        masking = ids == mask_id  # (rows, L)
        rows = masking.shape[0]
        nan = torch.full((len(layers), rows), float("nan"))
        state.update(masking=masking, prev=None if prev is None else prev.masking,
                     masses={k: nan.clone() for k in (*INTERACTIONS, "visible_key_share")})

    def attn_pre(i, role):
        def hook(module, args, kwargs):
            own = args[0] if args else kwargs["own"]
            ctx = args[1] if len(args) > 1 else kwargs.get("ctx")
            mask = args[2] if len(args) > 2 else kwargs.get("attn_mask")
            ctx_kv = args[3] if len(args) > 3 else kwargs.get("ctx_kv")  # caption keys (text models)
            Lc = 0 if ctx is None else ctx.shape[1]
            q_mask, k_mask = _kinds(role, state["masking"], state["prev"], own.shape[1], Lc)
            k_text = None
            if ctx_kv is not None:  # T caption keys first: neither visible nor [MASK]
                T = ctx_kv.shape[1]
                k_mask = torch.cat([k_mask.new_zeros(k_mask.shape[0], T), k_mask], dim=1)
                k_text = torch.zeros_like(k_mask)
                k_text[:, :T] = True
            with torch.no_grad():
                probs = attention_probs(module, own, ctx, mask, ctx_kv)  # (rows, H, n, Lk)
                masses = interaction_mass(probs, q_mask, k_mask, k_text)
            for k, v in masses.items():
                state["masses"][k][i] = v.float().cpu()
            state["masses"]["visible_key_share"][i] = key_share(q_mask, k_mask, k_text).cpu()
        return hook

    def model_post(_module, _args, _kwargs, _out):
        rec.calls.append(state.pop("masses"))

    try:
        handles.append(model.register_forward_pre_hook(model_pre, with_kwargs=True))
        for i, (_, attn, role) in enumerate(layers):
            handles.append(attn.register_forward_pre_hook(attn_pre(i, role), with_kwargs=True))
        handles.append(model.register_forward_hook(model_post, with_kwargs=True))
        yield rec
    finally:
        for h in handles:
            h.remove()


@dataclass
class AttentionMapResult:
    """per_sample[kind] (N, S, B): per block, sampling step and sample; masses[kind] (N, S): their mean
    over samples (NaN where no sample had queries of that kind); layers: block names."""

    layers: list[str]
    per_sample: dict[str, torch.Tensor]

    @property
    def masses(self) -> dict[str, torch.Tensor]:
        return {k: v.nanmean(-1) for k, v in self.per_sample.items()}

    def rows(self) -> list[dict]:
        out = []
        masses = self.masses
        N, S = masses["mask_to_visible"].shape
        for li, layer in enumerate(self.layers):
            for s in range(S):
                out.append({"layer": layer, "step": s + 1,
                            **{k: float(masses[k][li, s]) for k in (*INTERACTIONS, "visible_key_share")}})
        return out


def concat_maps(parts: list[AttentionMapResult]) -> AttentionMapResult:
    """Results of several sample batches as one."""
    return AttentionMapResult(parts[0].layers, {k: torch.cat([p.per_sample[k] for p in parts], dim=-1)
                                                for k in parts[0].per_sample})


def run_attention_maps(model, labels, settings=None, *, generator=None, **overrides) -> AttentionMapResult:
    """Samples ``labels`` (B,) under ``settings`` (a SamplerSettings; keyword ``overrides`` replace
    fields) and records the per-block, per-step attention masses of the conditional rows (the
    sampler's unconditional CFG rows are left out)."""
    from enat_lightning.sampling import generate
    from enat_lightning.sampling.iterative import resolve_settings

    settings = resolve_settings(settings, overrides)
    steps = settings.steps
    if not hasattr(labels, "__len__") or isinstance(labels, (list, tuple)):
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    B = len(labels)  # class labels (B,) or Captions of B rows
    with record_attention(model) as rec:
        generate(model, labels, settings, generator=generator)
    if len(rec.calls) != steps:
        raise RuntimeError(f"expected one model call per step ({steps}), recorded {len(rec.calls)}")
    per_sample = {k: torch.stack([c[k][:, :B] for c in rec.calls], dim=1)  # (N, S, B)
                  for k in rec.calls[0]}
    return AttentionMapResult(rec.names, per_sample)


def figure_attention_maps(result: AttentionMapResult):
    """Heatmaps (blocks x steps): [MASK]->visible mass, [MASK]->[MASK] mass, and the visible mass
    relative to the visible-key share (> 1: [MASK] queries prefer visible keys beyond uniform)."""
    plt = pyplot()
    masses = result.masses
    mv = masses["mask_to_visible"]
    share = masses["visible_key_share"]
    ratio = torch.where(share > 0, mv / share.clamp_min(1e-12), torch.full_like(mv, float("nan")))
    panels = [("[MASK] -> visible mass", mv, (0.0, 1.0)),
              ("[MASK] -> [MASK] mass", masses["mask_to_mask"], (0.0, 1.0)),
              ("[MASK] -> visible / visible-key share", ratio, None)]
    N, S = mv.shape
    fig, axes = plt.subplots(1, 3, figsize=(3.2 * 3 + 1.0, 0.32 * N + 1.8), squeeze=False)
    for ax, (title, values, lim) in zip(axes[0], panels):
        vals = values.numpy()
        kw = {"vmin": lim[0], "vmax": lim[1]} if lim else {}
        im = ax.imshow(vals, aspect="auto", cmap="magma", **kw)
        for (r, c), v in np.ndenumerate(vals):
            if v == v:
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if im.norm(v) < 0.5 else "black")  # readable on dark cells
        ax.set_xticks(range(S), [str(s + 1) for s in range(S)], fontsize=7)
        ax.set_yticks(range(N), result.layers, fontsize=7)
        ax.set_xlabel("sampling step")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Attention mass of [MASK] queries per block and step (NaN/blank: no [MASK] queries)", fontsize=9,
                 y=1.06)
    return fig


def write_attention_map_outputs(result: AttentionMapResult, out_dir, logger=None) -> dict:
    """attention_maps.csv and attention_maps.png (+ TensorBoard figure/scalars with ``logger``)."""
    from pathlib import Path

    out = Path(out_dir)
    paths = {"csv": out / "attention_maps.csv", "png": out / "attention_maps.png"}
    write_csv(paths["csv"], result.rows())
    fig = figure_attention_maps(result)
    save_figure(fig, paths["png"])
    writer = getattr(logger, "experiment", logger)
    if writer is not None:
        writer.add_figure("attention/maps", fig, close=False)
        mv = result.masses["mask_to_visible"]
        for li, layer in enumerate(result.layers):
            for s in range(mv.shape[1]):
                if mv[li, s] == mv[li, s]:
                    writer.add_scalar(f"attention/mask_to_visible/{layer}", float(mv[li, s]), s + 1)
        writer.flush()
    pyplot().close(fig)
    return paths


def analyze_attention_maps(ckpt, out_dir, settings=None, *, num_samples: int = 16, labels=None, seed: int = 0,
                           device: str = "cpu", batch_size: int = 32, logger=None, captions=None,
                           trust: bool = False):
    """`enat analyze attention-maps`: per-block, per-step attention masses of a checkpoint's EMA network
    (samples in batches of ``batch_size``, batch b seeded with seed + b) under ``settings`` (SamplerSettings)."""
    from enat_lightning.sampling.checkpoint import load_generator

    model, cfg = load_generator(ckpt, device=device, trust=trust)
    y = analysis_conditions(cfg, num_samples, labels, captions, device)
    parts = [run_attention_maps(model, yb, settings, generator=g)
             for yb, g in seeded_batches(y, batch_size, seed, device)]
    result = concat_maps(parts)
    return result, write_attention_map_outputs(result, out_dir, logger=logger)
