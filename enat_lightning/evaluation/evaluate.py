"""Sample -> features -> FID / IS (/ accuracy): the evaluation protocol as library functions.

Shape letters: N samples in total, n on this rank, F features, C feature-network classes.

Data parallel without changing the result: the N samples are cut into global chunks of
``batch_size``; chunk c has labels fixed by its index, sample i draws from its own generator
(``seeding.sample_seed(seed, i)``), and rank r runs chunks c = r, r + W, ... . Features
are gathered in global index order, so 1 process and W processes compute the same numbers.
Ranks talk through ``torch.distributed`` when a process group is initialised (Lightning's DDP,
or ``torchrun``); nothing here imports Lightning.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from enat_lightning.evaluation.frechet import FeatureStats, fid_from_stats, inception_score, stats_from_features
from enat_lightning.sampling.settings import SamplerSettings  # re-exported by enat_lightning.evaluation

from .features import FeatureExtractor, to_uint8
from enat_lightning.errors import InvalidInput, MissingInput


def sample_labels(num_samples: int, num_classes: int, per_class_balanced: bool = True, seed: int = 0) -> torch.Tensor:
    """(N,) labels: index mod C (every class N/C times, ADM / U-ViT protocol) or uniform draws."""
    if num_samples < 1:
        raise InvalidInput(f"num_samples must be >= 1, got {num_samples}")
    if per_class_balanced:
        return torch.arange(num_samples) % num_classes
    return torch.randint(num_classes, (num_samples,), generator=torch.Generator().manual_seed(seed))


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_chunks(num_samples: int, batch_size: int, rank: int, world_size: int) -> list[tuple[int, int, int]]:
    """(chunk index, start, stop) of the global chunks this rank owns."""
    n_chunks = math.ceil(num_samples / batch_size)
    return [(c, c * batch_size, min(num_samples, (c + 1) * batch_size)) for c in range(rank, n_chunks, world_size)]


def gather_rows(local: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """Rows (n, ...) with global indices (n,) from every rank -> (total, ...) in index order."""
    import torch.distributed as dist

    rank, world = dist_info()
    if world == 1:
        out = local.new_empty((total, *local.shape[1:]))
        out[index] = local
        return out
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    n = torch.tensor([local.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(s.item() for s in sizes))
    pad = local.new_zeros((most, *local.shape[1:])).to(dev)
    pad[: local.shape[0]] = local.to(dev)
    ipad = torch.full((most,), -1, dtype=torch.long, device=dev)
    ipad[: local.shape[0]] = index.to(dev)
    rows = [torch.zeros_like(pad) for _ in range(world)]
    idxs = [torch.zeros_like(ipad) for _ in range(world)]
    dist.all_gather(rows, pad)
    dist.all_gather(idxs, ipad)
    rows_t, idx_t = torch.cat(rows).cpu(), torch.cat(idxs).cpu()
    keep = idx_t >= 0
    out = local.new_empty((total, *local.shape[1:]), device="cpu")
    out[idx_t[keep]] = rows_t[keep]
    return out


@torch.no_grad()
def generate_images(model, tokenizer, labels: torch.Tensor, settings: SamplerSettings, *, seed: int = 0,
                    batch_size: int = 32, rank: int = 0, world_size: int = 1, progress=None, conditions=None,
                    safe_point=None):
    """This rank's share of the samples -> (global indices (n,), uint8 images (n, 3, H, W)).

    ``conditions``: what sample i is conditioned on, row-sliceable (default: ``labels``), e.g.
    ``Captions`` for a text model. ``safe_point(where)`` is called after every chunk (a stop request, e.g.
    signals.StopRequest.check, raises there)."""
    from enat_lightning.sampling import generate
    from enat_lightning.seeding import sample_generators

    device = next(model.parameters()).device
    idx, imgs = [], []
    for c, start, stop in my_chunks(len(labels), batch_size, rank, world_size):
        gen = sample_generators(seed, range(start, stop), device)  # sample i: seed (seed, i)
        cond = labels[start:stop].to(device) if conditions is None else conditions[start:stop]
        ids = generate(model, cond, settings, generator=gen)  # (b, h, w)
        imgs.append(to_uint8(tokenizer.decode(ids)).cpu())  # (b, 3, H, W)
        idx.append(torch.arange(start, stop))
        if progress is not None:
            progress(stop - start)
        if safe_point is not None:
            safe_point(f"after {sum(len(i) for i in idx)} of {len(labels)} samples generated")
    if not imgs:
        return torch.zeros(0, dtype=torch.long), None
    return torch.cat(idx), torch.cat(imgs)


@torch.no_grad()
def extract(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 100):
    """uint8 images (n, 3, H, W) -> features (n, F), logits (n, C) or None."""
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        f = extractor(images[i:i + batch_size])
        feats.append(f.features.double())
        if f.logits is not None:
            logits.append(f.logits.double())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def score_features(features: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor | None,
                   extractor: FeatureExtractor, ref: FeatureStats | None, is_splits: int = 10) -> dict:
    """FID against ``ref``, IS and (demo) class accuracy from features of all N samples."""
    out: dict = {"num_samples": int(features.shape[0]), "feature": extractor.name}
    if ref is not None:
        if ref.feature is not None and ref.feature != extractor.name:
            raise InvalidInput(f"reference statistics were computed with feature network {ref.feature!r}, but this "
                             f"evaluation uses {extractor.name!r}: FIDs across networks are meaningless")
        out["fid"] = fid_from_stats(stats_from_features(features, extractor.name), ref)
    reason = getattr(extractor, "no_is_reason", None)
    if logits is None and reason:  # say why there is no IS instead of leaving it out silently
        out["is_unavailable"] = reason
    if logits is not None and logits.shape[0] >= is_splits:
        out["is_mean"], out["is_std"] = inception_score(logits, splits=is_splits)
        out["is_splits"] = is_splits
    if logits is not None and labels is not None and extractor.predicts_labels:
        cond = labels < logits.shape[1]  # the null label (unconditional samples) has no class to check
        if bool(cond.any()):
            out["accuracy"] = float((logits[cond].argmax(1) == labels[cond]).float().mean())
    return out


def evaluate(model, tokenizer, extractor: FeatureExtractor, *, num_samples: int, ref: FeatureStats | None,
             settings: SamplerSettings = SamplerSettings(), per_class_balanced: bool = True, seed: int = 0,
             batch_size: int = 32, is_splits: int = 10, progress=None, return_samples: bool = False,
             labels: torch.Tensor | None = None, conditions=None, metrics=None, safe_point=None) -> dict:
    """Generate ``num_samples`` images (data-parallel over the process group), score them.

    Every rank returns the same dict: fid (if ``ref``), is_mean / is_std, accuracy (demo feature
    network), num_samples, feature, sampler settings, seed. With ``return_samples`` the dict also
    holds ``images`` (N, 3, H, W) uint8 and ``labels`` (N,) (gathered on every rank).
    ``labels`` overrides the drawn class labels; ``conditions`` (row-sliceable, e.g. ``Captions`` for
    a text model) overrides what sample i is conditioned on (then ``labels`` are just indices).
    ``ref``: ``FeatureStats`` (FID) or a ``ReferenceBatch`` (adds sFID, precision / recall);
    ``metrics``: the metric set (``evaluation.metrics.METRICS``; None: all that the inputs allow).
    ``safe_point(where)``: called after every sampled chunk and feature batch (a stop request raises there).
    """
    from .metrics import as_reference_batch, parse_metrics, spatial_wanted

    metrics = parse_metrics(metrics)
    ref = as_reference_batch(ref)
    rank, world = dist_info()
    if labels is None and conditions is not None:
        labels = torch.arange(num_samples)  # sample i <-> conditions row i
    elif labels is None:
        labels = sample_labels(num_samples, model.cfg.num_classes, per_class_balanced, seed)
    elif len(labels) != num_samples:  # e.g. caption indices (text FID-30K)
        raise InvalidInput(f"{len(labels)} labels given for num_samples={num_samples}")
    if conditions is not None and len(conditions) != num_samples:
        raise InvalidInput(f"{len(conditions)} conditions given for num_samples={num_samples}")
    idx, images = generate_images(model, tokenizer, labels, settings, seed=seed, batch_size=batch_size,
                                  rank=rank, world_size=world, progress=progress, conditions=conditions,
                                  safe_point=safe_point)
    if images is None:  # more ranks than chunks: this rank contributes no rows
        images = torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
        feats, logits, spatial = torch.zeros(0, extractor.num_features), None, None
    else:
        from .spatial import extract_all

        feats, logits, spatial = extract_all(extractor, images, spatial=spatial_wanted(metrics, ref),
                                             safe_point=safe_point)
    feats = gather_rows(feats.double(), idx, num_samples)
    logits = _gather_optional(logits, idx, num_samples)
    spatial = _gather_optional(spatial, idx, num_samples)
    # class accuracy only where the labels are classes (not caption indices)
    res = score_all(feats, logits, spatial, labels if conditions is None else None, extractor, ref, is_splits,
                    metrics)
    res.update(sampler=settings.to_dict(), seed=seed, per_class_balanced=per_class_balanced,
               world_size=world)
    if return_samples:
        res["images"] = gather_rows(images, idx, num_samples) if images.shape[0] else None
        res["labels"] = labels
    return res


def _gather_optional(t: torch.Tensor | None, idx: torch.Tensor, total: int) -> torch.Tensor | None:
    """Gather logits; every rank must agree whether there are any (a rank without rows sends C=0)."""
    rank, world = dist_info()
    if world == 1:
        return None if t is None else gather_rows(t.double(), idx, total)
    import torch.distributed as dist

    width = [t.shape[1] if t is not None else 0]
    widths = [None] * world
    dist.all_gather_object(widths, width)
    C = max(w[0] for w in widths)
    if C == 0:
        return None
    local = t.double() if t is not None else torch.zeros(0, C, dtype=torch.float64)
    return gather_rows(local, idx, total)


# -- existing sample sets and reference sets ---------------------------------------------------------

def load_samples(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``samples.npz`` (ADM layout: ``arr_0`` uint8 (N, H, W, 3); ``labels`` optional) ->
    uint8 images (N, 3, H, W), labels (N,) or None."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"samples file {path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        key = "arr_0" if "arr_0" in z.files else "images" if "images" in z.files else None
        if key is None:
            raise InvalidInput(f"{path} has no images: expected key 'arr_0' (ADM layout) or 'images', found {z.files}")
        arr = z[key]
        labels = torch.from_numpy(z["labels"].astype(np.int64)) if "labels" in z.files else None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise InvalidInput(f"{path}: '{key}' must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), labels


def score_images(images: torch.Tensor, labels: torch.Tensor | None, extractor: FeatureExtractor,
                 ref, is_splits: int = 10, batch_size: int = 100, metrics=None, safe_point=None) -> dict:
    """Score an existing uint8 set (N, 3, H, W) on one process (``ref``: FeatureStats or ReferenceBatch;
    ``safe_point(where)`` after every feature batch)."""
    from .metrics import as_reference_batch, parse_metrics, spatial_wanted
    from .spatial import extract_all

    metrics = parse_metrics(metrics)
    ref = as_reference_batch(ref)
    fs = extract_all(extractor, images, batch_size, spatial=spatial_wanted(metrics, ref), safe_point=safe_point)
    return score_all(fs.pool, fs.logits, fs.spatial, labels, extractor, ref, is_splits, metrics)


def score_all(features: torch.Tensor, logits: torch.Tensor | None, spatial: torch.Tensor | None,
              labels: torch.Tensor | None, extractor: FeatureExtractor, ref, is_splits: int = 10,
              metrics=None) -> dict:
    """The selected metric set (FID, sFID, IS, precision, recall, accuracy) of N samples' features."""
    from .metrics import as_reference_batch, parse_metrics, score_extra, select
    from .spatial import FeatureSet

    metrics = parse_metrics(metrics)
    ref = as_reference_batch(ref)
    res = score_features(features, logits, labels, extractor, None if ref is None else ref.pool, is_splits)
    res.update(score_extra(FeatureSet(features, logits, spatial), extractor, ref, metrics))
    res["metrics"] = list(metrics)
    return select(res, metrics)


def stats_of_images(images: torch.Tensor, extractor: FeatureExtractor, batch_size: int = 100) -> FeatureStats:
    """Reference statistics of uint8 images (N, 3, H, W) under ``extractor``."""
    feats, _ = extract(extractor, images, batch_size)
    return stats_from_features(feats, extractor.name)
