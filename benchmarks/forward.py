"""ENAT-S forward speed: batch 16, 128 of 256 tokens masked, fp32 CPU, with and without reuse.

Prints time per call, counted FLOPs, achieved GFLOP/s and its share of an fp32 matmul peak measured
in the same run (the machine is shared and drifts, so only the ratio is meaningful).
Usage: python benchmarks/forward.py [--batch 16] [--repeats 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _peak import matmul_peak_gflops, measure  # noqa: E402

from enat_lightning.models import ENAT, preset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = preset("enat-s")
    model = ENAT(cfg).eval()
    B, L, K = args.batch, cfg.seq_len, cfg.mask_id
    g = torch.Generator().manual_seed(0)
    order = torch.rand(B, L, generator=g).argsort(dim=1)
    ids = torch.randint(0, K, (B, L), generator=g)
    ids.scatter_(1, order[:, :128], K)  # 128 masked
    prev_ids = ids.clone()
    prev_ids.scatter_(1, order[:, 128:192], K)  # previous step: 64 more masked
    labels = torch.randint(0, cfg.num_classes, (B,), generator=g)

    results = {}
    with torch.no_grad():
        prev = model(prev_ids, labels)
        cases = {
            "no_reuse": lambda: model(ids, labels),
            "reuse": lambda: model(ids, labels, prev=prev),
            "no_reuse_masked_logits": lambda: model(ids, labels, logits_at="masked"),
        }
        peak_before = matmul_peak_gflops()
        for name, fn in cases.items():
            results[name] = measure(fn, args.repeats)
        peak = max(peak_before, matmul_peak_gflops())
    print(f"threads={torch.get_num_threads()}  fp32 matmul peak (best of two measurements): {peak:.1f} GFLOP/s")
    print(f"{'case':<24}{'ms/call':>10}{'GFLOPs':>10}{'GFLOP/s':>10}{'% peak':>9}")
    for name, r in results.items():
        r["share_of_peak"] = r["gflop_per_s"] / peak
        print(f"{name:<24}{r['seconds'] * 1e3:>10.1f}{r['gflops_counted']:>10.2f}{r['gflop_per_s']:>10.1f}"
              f"{100 * r['share_of_peak']:>8.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"peak_gflop_per_s": peak, **results}, indent=2))


if __name__ == "__main__":
    main()
