"""GPU sampling throughput: ENAT-S/B/L img/s with and without reuse, beside the official call pattern.

8 steps, CFG 2.5 (ImageNet-256 setting), bf16 autocast, batch ``--batch`` on one GPU, tokens only
(the VQ decoder is the same for every sampler and left out):
  ours, reuse:        ``sampling.generate`` (cond/uncond in one 2B-row forward, head at masked
                      positions, unguided step-0 uncond pass skipped), reuse on
  ours, no reuse:     the same without computation reuse (the paper's "w/o reuse" rows)
  official pattern:   ``benchmarks/sample.py``'s re-implementation of the official sampler's calls
                      (separate cond / uncond forwards, head over all L positions), reuse on
All cases run in the same process, so the ratios are meaningful.

    python benchmarks/gpu_sample.py [--models enat-s,enat-b,enat-l] [--batch 256] [--repeats 3]
    python benchmarks/gpu_sample.py --smoke     # a tiny model on the CPU: checks the script

Needs a CUDA GPU except with --smoke. Not run on a GPU yet (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample import official_pattern_generate  # noqa: E402  (the official pattern, one definition)

from enat_lightning.models import ENATConfig, build_model, preset  # noqa: E402
from enat_lightning.sampling import generate  # noqa: E402

SMOKE_CFG = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)
SETTINGS = dict(steps=8, cfg_scale=2.5, mask_temp=1.5, samp_temp=6.0)


def cases(model, labels, device):
    def gen(seed):
        return torch.Generator(device=device).manual_seed(seed)

    def official():
        with torch.device(device):  # that re-implementation builds its tensors with the default device
            return official_pattern_generate(model, labels, generator=gen(0), **SETTINGS)

    return {"ours_reuse": lambda: generate(model, labels, reuse=True, generator=gen(0), **SETTINGS),
            "ours_no_reuse": lambda: generate(model, labels, reuse=False, generator=gen(0), **SETTINGS),
            "official_pattern_reuse": official}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name, cfg, batch, repeats, device, amp) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    labels = torch.randint(0, cfg.num_classes, (batch,), generator=torch.Generator().manual_seed(0)).to(device)
    row = {"model": name, "batch": batch}
    fns = cases(model, labels, device)
    best = {k: float("inf") for k in fns}
    peak = {}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for fn in fns.values():  # warm-up (kernels, allocator)
            fn()
        for _ in range(repeats):  # alternate the cases: drift hits all alike
            for k, fn in fns.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                best[k] = min(best[k], time.perf_counter() - t0)
                if device.type == "cuda":
                    peak[k] = torch.cuda.max_memory_allocated(device) / 2**30
    for k in fns:
        row[k] = {"img_per_s": batch / best[k], "peak_memory_gib": peak.get(k)}
    row["reuse_speedup"] = row["ours_reuse"]["img_per_s"] / row["ours_no_reuse"]["img_per_s"]
    row["vs_official"] = row["ours_reuse"]["img_per_s"] / row["official_pattern_reuse"]["img_per_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="enat-s,enat-b,enat-l")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny model, CPU: checks the script runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.smoke:
        device, amp, models, batch, repeats = torch.device("cpu"), False, [("smoke", SMOKE_CFG)], 4, 1
    else:
        if not torch.cuda.is_available():
            print("benchmarks/gpu_sample.py needs a CUDA GPU and none is visible; --smoke checks the script on "
                  "the CPU", file=sys.stderr)
            return 2
        device, amp = torch.device("cuda", 0), True
        models, batch, repeats = [(m, preset(m)) for m in args.models.split(",")], args.batch, args.repeats
    rows = [bench_model(name, cfg, batch, repeats, device, amp) for name, cfg in models]
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)"
    print(f"{dev}, batch {batch}, 8 steps, CFG 2.5, {'bf16 autocast' if amp else 'fp32'}, tokens only")
    print(f"{'model':<10}{'case':<24}{'img/s':>10}{'peak GiB':>10}")
    for r in rows:
        for k in ("ours_reuse", "ours_no_reuse", "official_pattern_reuse"):
            mem = r[k]["peak_memory_gib"]
            print(f"{r['model']:<10}{k:<24}{r[k]['img_per_s']:>10.1f}{'n/a' if mem is None else f'{mem:.2f}':>10}")
        print(f"{'':<10}{'reuse / no reuse':<24}{r['reuse_speedup']:>10.2f}x")
        print(f"{'':<10}{'ours / official':<24}{r['vs_official']:>10.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": dev, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
