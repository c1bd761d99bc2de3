"""ENAT-S training step speed: forward + backward + AdamW + EMA, batch 16, fp32 CPU.

Runs ``ENATModule.training_step`` itself (masks, label drop, optional EMA reuse pass, loss) with
reuse forced off and forced on (a real run mixes them 50/50), then the optimizer step and EMA update.
Prints seconds per step, counted FLOPs, GFLOP/s and its share of an fp32 matmul peak measured in the
same run (the machine is shared and drifts, so only the ratio is meaningful).
Usage: python benchmarks/train_step.py [--batch 16] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _peak import matmul_peak_gflops, measure  # noqa: E402

from enat_lightning.models import preset  # noqa: E402
from enat_lightning.module import ENATModule, update_ema  # noqa: E402


def make_step(module: ENATModule, batch: dict, optimizer: torch.optim.Optimizer):
    def step() -> None:
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_ema(module.ema, module.net)  # AveragedModel: the decay is part of its averaging rule
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = preset("enat-s")
    g = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(0, cfg.codebook_size, (args.batch, cfg.seq_len), generator=g),
             "label": torch.randint(0, cfg.num_classes, (args.batch,), generator=g)}
    results = {}
    peak_before = matmul_peak_gflops()
    for name, reuse_prob in (("no_reuse", 0.0), ("reuse", 1.0)):
        module = ENATModule(cfg, reuse_prob=reuse_prob, warmup_steps=0).train()
        module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
        module.log = lambda *a, **k: None  # no fit loop here
        optimizer = module.configure_optimizers()["optimizer"]
        results[name] = measure(make_step(module, batch, optimizer), args.repeats)
    peak = max(peak_before, matmul_peak_gflops())
    mixed = 0.5 * (results["no_reuse"]["seconds"] + results["reuse"]["seconds"])
    print(f"threads={torch.get_num_threads()}  fp32 matmul peak (best of two measurements): {peak:.1f} GFLOP/s")
    print(f"ENAT-S, batch {args.batch}, L={cfg.seq_len}, Beta(12,3) mask ratio of step 0, fp32 CPU")
    print(f"{'case':<12}{'s/step':>10}{'GFLOPs':>10}{'GFLOP/s':>10}{'% peak':>9}")
    for name, r in results.items():
        r["share_of_peak"] = r["gflop_per_s"] / peak
        print(f"{name:<12}{r['seconds']:>10.3f}{r['gflops_counted']:>10.2f}{r['gflop_per_s']:>10.1f}"
              f"{100 * r['share_of_peak']:>8.1f}%")
    print(f"50/50 mix (reuse_prob 0.5): {mixed:.3f} s/step")
    if args.json:
        args.json.write_text(json.dumps({"peak_gflop_per_s": peak, "mixed_seconds": mixed, **results}, indent=2))


if __name__ == "__main__":
    main()
