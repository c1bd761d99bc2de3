"""The ADM metric set -- FID, sFID, IS, precision, recall (+ the demo's class accuracy) -- from one FeatureSet.

A metric that cannot be computed is never silently missing: the result holds ``<metric>_unavailable``
with the reason (no spatial layer in the feature network, no ``mu_s`` or no ``arr_0`` in the reference,
no logits).
"""
from __future__ import annotations

from .frechet import FeatureStats, fid_from_stats, stats_from_features
from .precision_recall import K_NEIGHBOURS, precision_recall
from .reference_batch import ReferenceBatch
from .spatial import SPATIAL_NAME, FeatureSet

METRICS = ("fid", "sfid", "is", "precision", "recall", "accuracy")
RESULT_KEYS = {"fid": ("fid",), "sfid": ("sfid",), "is": ("is_mean", "is_std", "is_splits", "is_unavailable"),
               "precision": ("precision",), "recall": ("recall",), "accuracy": ("accuracy",)}


def parse_metrics(metrics) -> tuple[str, ...]:
    """'fid,sfid' / ['fid', 'is'] / None (all) -> validated tuple in canonical order."""
    if metrics is None or metrics == "all":
        return METRICS
    items = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    unknown = [m for m in items if m not in METRICS]
    if unknown or not items:
        raise ValueError(f"unknown metric(s) {unknown or items}: choose from {', '.join(METRICS)} (or 'all')")
    return tuple(m for m in METRICS if m in items)


def as_reference_batch(ref) -> ReferenceBatch | None:
    if ref is None or isinstance(ref, ReferenceBatch):
        return ref
    if isinstance(ref, FeatureStats):
        return ReferenceBatch(ref)
    raise TypeError(f"a reference must be FeatureStats or ReferenceBatch, got {type(ref).__name__}")


def score_extra(fs: FeatureSet, extractor, ref: ReferenceBatch | None, metrics, pr_block: int = 10_000,
                device=None) -> dict:
    """sFID, precision and recall (FID / IS / accuracy come from ``evaluate.score_features``)."""
    out: dict = {}
    if ref is None:
        return out
    if "sfid" in metrics:
        if fs.spatial is None:
            out["sfid_unavailable"] = (f"sFID unavailable: the feature network {extractor.name!r} has no spatial "
                                       f"layer (mixed_6/conv); use the Inception-v3 ('inception')")
        elif ref.spatial is None:
            out["sfid_unavailable"] = ("sFID unavailable: the reference has no spatial statistics (mu_s/sigma_s); "
                                       "make it with `enat fid-stats` and the Inception-v3, or use an ADM reference "
                                       "batch")
        else:
            if ref.spatial.feature is not None and ref.spatial.feature != SPATIAL_NAME:
                raise ValueError(f"reference spatial statistics were made with {ref.spatial.feature!r}, not "
                                 f"{SPATIAL_NAME!r}")
            out["sfid"] = fid_from_stats(stats_from_features(fs.spatial, SPATIAL_NAME), ref.spatial)
    if "precision" in metrics or "recall" in metrics:
        ref_feats = ref.features(extractor)
        if ref_feats is None:
            out["precision_recall_unavailable"] = ("precision/recall unavailable: the reference holds no images "
                                                   "(arr_0); an ADM reference batch or `enat fid-stats` output does")
        elif ref_feats.shape[0] <= K_NEIGHBOURS or fs.pool.shape[0] <= K_NEIGHBOURS:
            out["precision_recall_unavailable"] = f"precision/recall need more than {K_NEIGHBOURS} images per side"
        else:
            pr = precision_recall(ref_feats, fs.pool, block=pr_block, device=device)
            if "precision" in metrics:
                out["precision"] = pr.precision
            if "recall" in metrics:
                out["recall"] = pr.recall
            out["precision_recall_reference_images"] = int(ref_feats.shape[0])
    return out


def select(result: dict, metrics) -> dict:
    """Drops the keys of metrics outside the selected set (the rest of the record stays)."""
    drop = {k for m in METRICS if m not in metrics for k in RESULT_KEYS[m]}
    return {k: v for k, v in result.items() if k not in drop}


def spatial_wanted(metrics, ref: ReferenceBatch | None) -> bool:
    return "sfid" in metrics and ref is not None and ref.spatial is not None
