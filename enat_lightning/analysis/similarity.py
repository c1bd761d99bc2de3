"""Temporal interaction analysis (paper §4.2, Fig. 5): how much does each token's feature change
between adjacent sampling steps?

Shape letters: S sampling steps, P = S - 1 adjacent step pairs, B samples, L = grid**2 positions
(raster order), D width, N recorded layers, G = 3 position groups.

For the pair (s, s+1) every position falls in exactly one group, read from the two steps' *inputs*:
  newly_revealed       [MASK] in step s's input, visible in step s+1's input (decoded at step s)
  previously_visible   visible in both inputs (visible tokens never change)
  still_masked         [MASK] in both inputs

The paper's observation: similarity is low only at newly revealed positions, which is what makes
reusing the previous step's features of the other visible tokens safe.

Per-layer features come from forward hooks on the blocks (``model.blocks`` for NAT,
``model.encoder`` / ``model.decoder`` for ENAT) while the traced sampler runs; nothing in the model
changes. An ENAT block only sees the tokens it processes (encoder: visible tokens, or only the newly
revealed ones under reuse; decoder: [MASK] tokens), so positions a layer did not compute at a step are
NaN there and drop out of every mean.

Imports torch, numpy and (lazily) matplotlib only.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from enat_lightning.models.tokens import split_positions

from .report import atomic_write_bytes, pyplot, save_figure, write_csv
from enat_lightning.errors import InvalidInput

GROUPS = ("newly_revealed", "previously_visible", "still_masked")


# -- pure math --------------------------------------------------------------------------------------------
def token_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity along the last axis: a, b (..., D) -> (...). NaN inputs give NaN.

    ``eps`` guards a zero vector (similarity 0 then, as ``F.cosine_similarity``).
    """
    if a.shape != b.shape:
        raise InvalidInput(f"feature shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.double(), b.double()  # float32 dot products of wide features lose the 1e-4 differences
    dot = (a * b).sum(-1)
    norm = a.norm(dim=-1) * b.norm(dim=-1)
    return (dot / norm.clamp_min(eps)).float()


def transition_groups(input_ids: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Group of every position for each adjacent step pair.

    input_ids (S, B, L) the sampler's per-step inputs -> (P, G, B, L) bool, exactly one True along G.
    """
    if input_ids.dim() != 3 or input_ids.shape[0] < 2:
        raise InvalidInput(f"input_ids must be (S >= 2, B, L) per-step inputs, got {tuple(input_ids.shape)}")
    masked = input_ids == mask_id  # (S, B, L)
    before, after = masked[:-1], masked[1:]  # (P, B, L)
    if bool((~before & after).any()):
        raise InvalidInput("a visible token became [MASK] again between steps: not a sampler trace")
    return torch.stack([before & ~after, ~before, before & after], dim=1)  # (P, G, B, L)


def adjacent_similarity(feats: torch.Tensor) -> torch.Tensor:
    """feats (S, ..., L, D) -> (P, ..., L) cosine similarity of each position between steps s and s+1."""
    if feats.shape[0] < 2:
        raise InvalidInput(f"need features of at least 2 steps, got {feats.shape[0]}")
    return token_cosine(feats[:-1], feats[1:])


def group_means(sim: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean similarity per step pair and group, ignoring NaN (positions a layer did not compute).

    sim (P, B, L), groups (P, G, B, L) -> means (P, G) (NaN where a group is empty) and counts (P, G).
    """
    valid = groups & ~torch.isnan(sim).unsqueeze(1)  # (P, G, B, L)
    filled = torch.nan_to_num(sim, nan=0.0).double().unsqueeze(1)  # (P, 1, B, L)
    counts = valid.sum(dim=(2, 3))  # (P, G)
    sums = (filled * valid).sum(dim=(2, 3))
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
    return means.float(), counts


# -- per-layer capture --------------------------------------------------------------------------------------
def layer_modules(model) -> list[tuple[str, torch.nn.Module, str]]:
    """(name, block, which positions it computes) for every block: NAT "all", ENAT encoder "encoder",
    ENAT decoder "decoder"."""
    if not hasattr(model, "blocks") and not hasattr(model, "encoder") and hasattr(model, "net"):
        model = model.net  # a wrapper such as AttentionCut: the blocks live in the wrapped network
    if hasattr(model, "blocks"):
        return [(f"block{i}", b, "all") for i, b in enumerate(model.blocks)]
    if hasattr(model, "encoder") and hasattr(model, "decoder"):
        return ([(f"enc{i}", b, "encoder") for i, b in enumerate(model.encoder)]
                + [(f"dec{i}", b, "decoder") for i, b in enumerate(model.decoder)])
    raise InvalidInput(f"{type(model).__name__} has neither .blocks (NAT) nor .encoder/.decoder (ENAT)")


def _positions(kind: str, masking: torch.Tensor, prev_masking: torch.Tensor | None) -> torch.Tensor | None:
    """(rows, n) raster positions a block of this kind computed, or None for all L positions."""
    if kind == "all":
        return None
    vis_idx, mask_idx = split_positions(masking, "masked tokens")
    if kind == "decoder":
        return mask_idx
    if prev_masking is None:  # plain encoder: every visible token
        return vis_idx
    _, new_idx = split_positions(~masking & prev_masking, "newly revealed tokens")  # reuse: only new ones
    return new_idx


@dataclass
class LayerRecorder:
    """Per model call, every block's output scattered to (N, rows, L, D) (NaN = not computed), handed to
    ``on_call`` when given (then nothing is kept: memory stays at one step), else kept in ``calls``."""

    names: list[str]
    on_call: object = None
    calls: list[torch.Tensor] = field(default_factory=list)  # each (N, rows, L, D)
    num_calls: int = 0


@contextmanager
def record_layer_features(model, on_call=None):
    """Within the block each forward of ``model`` produces an (N, rows, L, D) tensor of block outputs.

    Uses forward hooks only (removed on exit). Rows are all rows of that call (the sampler batches
    conditional rows first, so ``[:, :B]`` are the conditional ones).
    """
    layers = layer_modules(model)
    recorder = LayerRecorder([n for n, _, _ in layers], on_call)
    outputs: dict[int, torch.Tensor] = {}
    handles = []

    def block_hook(i):
        def hook(_module, _args, out):
            outputs[i] = out.detach()
        return hook

    def model_hook(_module, args, kwargs, out):
        prev = kwargs.get("prev", args[2] if len(args) > 2 else None)
        masking = out.masking  # (rows, L)
        rows, L = masking.shape
        D = out.feat.shape[-1]
        full = out.feat.new_full((len(layers), rows, L, D), float("nan"))  # (N, rows, L, D)
        prev_masking = None if prev is None else prev.masking
        for i, (_, _, kind) in enumerate(layers):
            if i not in outputs:  # e.g. the encoder is skipped when nothing is visible
                continue
            idx = _positions(kind, masking, prev_masking)
            if idx is None:
                full[i] = outputs[i]
            else:
                full[i].scatter_(1, idx.unsqueeze(-1).expand(-1, -1, D), outputs[i])
        outputs.clear()
        recorder.num_calls += 1
        if recorder.on_call is not None:
            recorder.on_call(full)
        else:
            recorder.calls.append(full)

    try:
        for i, (_, blk, _) in enumerate(layers):
            handles.append(blk.register_forward_hook(block_hook(i)))
        handles.append(model.register_forward_hook(model_hook, with_kwargs=True))
        yield recorder
    finally:
        for h in handles:
            h.remove()


# -- the study -------------------------------------------------------------------------------------------
@dataclass
class SimilarityResult:
    """sim (N, P, B, L): per layer, pair, sample, position; means (N, P, G); counts (N, P, G);
    groups (P, G, B, L); layers: names of the N rows ("final" = the sampler's output features)."""

    layers: list[str]
    sim: torch.Tensor
    groups: torch.Tensor
    means: torch.Tensor
    counts: torch.Tensor
    grid: int

    @property
    def num_pairs(self) -> int:
        return self.sim.shape[1]

    def rows(self) -> list[dict]:
        """One dict per (layer, pair, group): the CSV rows."""
        out = []
        for li, layer in enumerate(self.layers):
            for p in range(self.num_pairs):
                for g, group in enumerate(GROUPS):
                    out.append({"layer": layer, "pair": f"{p + 1}->{p + 2}", "step_a": p + 1, "step_b": p + 2,
                                "group": group, "mean_similarity": float(self.means[li, p, g]),
                                "num_positions": int(self.counts[li, p, g])})
        return out


def similarity_from_trace(trace, mask_id: int, grid: int, layer_sim: torch.Tensor | None = None,
                          layer_names: list[str] | None = None) -> SimilarityResult:
    """Similarity study from a ``GenerationTrace`` (final features) plus optional per-layer similarities.

    layer_sim (N, P, B, L): adjacent-step similarities of N recorded blocks (conditional rows).
    """
    input_ids = trace.stack("input_ids")  # (S, B, L)
    sim = adjacent_similarity(trace.stack("cond_feat")).unsqueeze(0)  # (1, P, B, L)
    names = ["final"]
    if layer_sim is not None:
        sim = torch.cat([layer_sim.to(sim.device), sim])  # (N+1, P, B, L)
        names = list(layer_names or [f"layer{i}" for i in range(layer_sim.shape[0])]) + names
    groups = transition_groups(input_ids, mask_id)  # (P, G, B, L)
    return _result(names, sim, groups, grid)


def _result(names, sim, groups, grid) -> SimilarityResult:
    means, counts = zip(*(group_means(s, groups) for s in sim))
    return SimilarityResult(names, sim, groups, torch.stack(means), torch.stack(counts), grid)


def concat_results(parts: list[SimilarityResult]) -> SimilarityResult:
    """Results of several sample batches as one (samples concatenated, means recomputed)."""
    if len(parts) == 1:
        return parts[0]
    sim = torch.cat([p.sim for p in parts], dim=2)  # (N, P, B, L)
    groups = torch.cat([p.groups for p in parts], dim=2)  # (P, G, B, L)
    return _result(parts[0].layers, sim, groups, parts[0].grid)


def run_similarity(model, labels, settings=None, *, layers: str = "final", generator=None,
                   **overrides) -> SimilarityResult:
    """Samples ``labels`` (B,) with the traced sampler and measures adjacent-step similarity.

    layers: "final" (the features fed to the output head) or "all" (every block's output too; the
    per-block similarity is computed step by step, so only two steps' block outputs are held).
    ``settings``: the SamplerSettings (keyword ``overrides`` replace fields, e.g. ``steps=4``).
    """
    from enat_lightning.sampling import generate
    from enat_lightning.sampling.iterative import resolve_settings

    settings = resolve_settings(settings, overrides)
    steps = settings.steps

    if layers not in ("final", "all"):
        raise InvalidInput(f"layers must be 'final' or 'all', got {layers!r}")
    if steps < 2:
        raise InvalidInput(f"the similarity between adjacent steps needs steps >= 2, got {steps}")
    if not hasattr(labels, "__len__") or isinstance(labels, (list, tuple)):
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    B = len(labels)  # class labels (B,) or Captions of B rows
    cfg = model.cfg
    if layers == "final":
        _, trace = generate(model, labels, settings, generator=generator, return_trace=True)
        return similarity_from_trace(trace, cfg.mask_id, cfg.grid)
    state: dict = {"prev": None, "sims": []}

    def on_call(full: torch.Tensor) -> None:
        cur = full[:, :B]  # (N, B, L, D) conditional rows
        if state["prev"] is not None:
            state["sims"].append(token_cosine(state["prev"], cur).cpu())  # (N, B, L)
        state["prev"] = cur

    with record_layer_features(model, on_call) as rec:
        _, trace = generate(model, labels, settings, generator=generator, return_trace=True)
    if rec.num_calls != steps:
        raise RuntimeError(f"expected one model call per step ({steps}), recorded {rec.num_calls}")
    layer_sim = torch.stack(state["sims"], dim=1)  # (N, P, B, L)
    return similarity_from_trace(trace, cfg.mask_id, cfg.grid, layer_sim, rec.names)


# -- outputs ---------------------------------------------------------------------------------------------
def figure_maps(result: SimilarityResult, layer: str = "final", samples: int = 2,
                pairs: list[int] | None = None):
    """Fig. 5a: similarity maps (one row per sample, one column per step pair); x = newly revealed."""
    plt = pyplot()
    li = result.layers.index(layer)
    P, B = result.num_pairs, result.sim.shape[2]
    pairs = list(range(P)) if pairs is None else pairs
    samples = min(samples, B)
    fig, axes = plt.subplots(samples, len(pairs), figsize=(1.6 * len(pairs) + 1.2, 1.7 * samples + 0.4),
                             squeeze=False)
    g = result.grid
    im = None
    for r in range(samples):
        for c, p in enumerate(pairs):
            ax = axes[r][c]
            smap = result.sim[li, p, r].reshape(g, g).numpy()
            im = ax.imshow(smap, vmin=-1.0, vmax=1.0, cmap="viridis")
            new = result.groups[p, 0, r].reshape(g, g).numpy()
            ys, xs = np.nonzero(new)
            ax.scatter(xs, ys, marker="x", s=max(4.0, 120.0 / g), c="red", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {p + 1}->{p + 2}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"sample {r}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle(f"Token-wise similarity of adjacent steps ({layer}); x = newly revealed", fontsize=9)
    return fig


def figure_means(result: SimilarityResult, layer: str = "final"):
    """Fig. 5b: mean similarity per step pair, per position group."""
    plt = pyplot()
    li = result.layers.index(layer)
    x = np.arange(1, result.num_pairs + 1)
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    # distinct markers and dashes: the two high groups usually overlap near 1
    for g, (name, marker, dash) in enumerate(zip(GROUPS, "os^", ("-", "--", ":"))):
        ax.plot(x, result.means[li, :, g].numpy(), marker=marker, linestyle=dash, label=name.replace("_", " "))
    ax.set_xticks(x, [f"{p}->{p + 1}" for p in x])
    ax.set_xlabel("adjacent steps")
    ax.set_ylabel("mean cosine similarity")
    ax.set_ylim(min(0.0, float(np.nanmin(result.means[li].numpy())) - 0.05) if result.means[li].isfinite().any()
                else 0.0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"Mean token similarity by group ({layer})", fontsize=9)
    return fig


def figure_layers(result: SimilarityResult):
    """Per-layer means: one heatmap (layers x step pairs) per group."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(GROUPS), figsize=(4.0 * len(GROUPS), 0.3 * len(result.layers) + 1.6),
                             squeeze=False)
    im = None
    for g, name in enumerate(GROUPS):
        ax = axes[0][g]
        im = ax.imshow(result.means[:, :, g].numpy(), vmin=-1.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(result.layers)), result.layers, fontsize=7)
        ax.set_xticks(range(result.num_pairs), [f"{p + 1}->{p + 2}" for p in range(result.num_pairs)], fontsize=7)
        ax.set_title(name.replace("_", " "), fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="mean cosine similarity")
    return fig


def write_similarity_outputs(result: SimilarityResult, out_dir: str | os.PathLike, *, samples: int = 2,
                             logger=None) -> dict[str, Path]:
    """Writes similarity.csv, similarity_maps.png (Fig. 5a), similarity_means.png (Fig. 5b), the raw
    per-position array (similarity.npz) and, with several layers, similarity_layers.png.

    ``logger``: a ``SummaryWriter`` or anything with one as ``.experiment`` (a Lightning
    TensorBoardLogger); gets the figures and one scalar per (layer, group) with the pair as step.
    """
    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "similarity.csv", "maps": out / "similarity_maps.png",
             "means": out / "similarity_means.png", "npz": out / "similarity.npz"}
    write_csv(paths["csv"], result.rows())
    buf = io.BytesIO()
    np.savez_compressed(buf, sim=result.sim.numpy(), groups=result.groups.numpy(), means=result.means.numpy(),
                        layers=np.array(result.layers), group_names=np.array(GROUPS))
    atomic_write_bytes(paths["npz"], buf.getvalue())
    figs = {"maps": figure_maps(result, samples=samples), "means": figure_means(result)}
    if len(result.layers) > 1:
        paths["layers"] = out / "similarity_layers.png"
        figs["layers"] = figure_layers(result)
    writer = getattr(logger, "experiment", logger)
    for key, fig in figs.items():
        save_figure(fig, paths[key])
        if writer is not None:
            writer.add_figure(f"similarity/{key}", fig, close=False)
        plt.close(fig)
    if writer is not None:
        for li, layer in enumerate(result.layers):
            for g, group in enumerate(GROUPS):
                for p in range(result.num_pairs):
                    v = float(result.means[li, p, g])
                    if v == v:  # skip NaN (empty group)
                        writer.add_scalar(f"similarity/{layer}/{group}", v, p + 1)
        writer.flush()
    return paths


def balanced_labels(num_samples: int, num_classes: int, labels: list[int] | None = None) -> torch.Tensor:
    """(N,) class ids: ``labels`` cycled, or 0, 1, ..., K-1, 0, ... when none are given."""
    if num_samples < 1:
        raise InvalidInput(f"--num-samples must be >= 1, got {num_samples}")
    pool = list(range(num_classes)) if not labels else list(labels)
    bad = [c for c in pool if not 0 <= c < num_classes]
    if bad:
        raise InvalidInput(f"--labels {bad} outside [0, {num_classes - 1}] for this checkpoint")
    return torch.tensor([pool[i % len(pool)] for i in range(num_samples)])


def analysis_conditions(cfg, num_samples: int, labels: list[int] | None = None, captions=None,
                        device: str | torch.device = "cpu"):
    """What an analysis samples: class ids (``balanced_labels``), or for a text model ``captions``
    (``Captions``, e.g. ``text.encode_prompts``) cycled to ``num_samples`` rows."""
    if cfg.condition != "text":
        if captions is not None:
            raise InvalidInput("prompts need a text model (condition: text); this checkpoint is class-conditional")
        return balanced_labels(num_samples, cfg.num_classes, labels).to(device)
    if captions is None:
        raise InvalidInput("this checkpoint is a text model: give prompts (--prompts FILE --text-encoder SPEC)")
    if num_samples < 1:
        raise InvalidInput(f"--num-samples must be >= 1, got {num_samples}")
    return captions[torch.arange(num_samples) % len(captions)]


def seeded_batches(labels: torch.Tensor, batch_size: int, seed: int, device: str | torch.device = "cpu"):
    """Yields (labels of batch b (<= batch_size,), a generator seeded seed + b): the batching every
    analysis samples with, so its samples depend only on (labels, batch_size, seed)."""
    for b, start in enumerate(range(0, len(labels), max(1, batch_size))):
        yield labels[start:start + batch_size], torch.Generator(device=device).manual_seed(seed + b)


def analyze_similarity(ckpt: str | os.PathLike, out_dir: str | os.PathLike, settings=None, *,
                       num_samples: int = 16, labels: list[int] | None = None, layers: str = "final",
                       show_samples: int = 2, seed: int = 0, device: str = "cpu", batch_size: int = 32, logger=None,
                       captions=None, trust: bool = False) -> tuple[SimilarityResult, dict[str, Path]]:
    """`enat analyze similarity`: load a checkpoint's EMA network, sample in batches of ``batch_size``
    (batch b seeded with seed + b) under ``settings`` (SamplerSettings), write the Fig. 5 outputs."""
    from enat_lightning.sampling.checkpoint import load_generator

    model, cfg = load_generator(ckpt, device=device, trust=trust)
    y = analysis_conditions(cfg, num_samples, labels, captions, device)
    parts = []
    for yb, g in seeded_batches(y, batch_size, seed, device):
        r = run_similarity(model, yb, settings, layers=layers, generator=g)
        r.sim, r.groups, r.means, r.counts = r.sim.cpu(), r.groups.cpu(), r.means.cpu(), r.counts.cpu()
        parts.append(r)
    result = concat_results(parts)
    return result, write_similarity_outputs(result, out_dir, samples=show_samples, logger=logger)
