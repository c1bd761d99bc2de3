"""GPU training throughput: ENAT-S/B/L img/s, MFU and peak memory, ours beside the official pattern.

One training step = ``ENATModule.training_step`` (masks, label drop, the reuse coin with the EMA
teacher, loss) + backward + AdamW + EMA update, bf16 autocast, batch ``--batch`` per GPU.
  ours:              logits at masked positions only, fused AdamW (what `enat fit` runs)
  official pattern:  the same recipe with the official network's call pattern: logits at all L
                     positions (loss on the masked ones) and the default (for-loop) AdamW
Both run in the same process, alternately, so the ratio is meaningful on a drifting machine.
MFU = model FLOPs per second (forward + backward + the teacher's forward, counted on the meta device
by ``callbacks.throughput.training_flops_per_sample``) / the GPU's bf16 peak (Lightning's table).

    python benchmarks/gpu_train.py [--models enat-s,enat-b,enat-l] [--batch 256] [--steps 20] [--compile]
    python benchmarks/gpu_train.py --memory-table          # the docs/scaling.md table (no GPU needed)
    python benchmarks/gpu_train.py --smoke                 # a tiny model on the CPU: checks the script

Needs a CUDA GPU except with --smoke / --memory-table. Not run on a GPU yet (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from enat_lightning.callbacks.throughput import training_flops_per_sample
from enat_lightning.models import ENATConfig, preset
from enat_lightning.module import ENATModule, update_ema

SMOKE_CFG = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)


def _attach(module: ENATModule, accelerator: str) -> ENATModule:
    import logging

    import lightning.pytorch as pl

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" per model

    module.trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    module.log = lambda *a, **k: None  # no fit loop collects logs here
    return module


def make_step(module: ENATModule, batch: dict, official: bool, device: torch.device, amp: bool):
    """One optimizer step of ours or of the official pattern (see the module docstring)."""
    if official:
        opt = torch.optim.AdamW(module.net.parameters(), lr=1e-4, betas=(0.99, 0.99), weight_decay=0.03,
                                foreach=False)
        module.net = _FullLogits(module.net)  # the head over all L positions, the loss on the masked ones
    else:
        opt = module.configure_optimizers()["optimizer"]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = module.training_step(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(module.ema, module.net.inner if official else module.net)
    return step


class _FullLogits(torch.nn.Module):
    """Runs the network's head at every position and hands the masked rows to the loss, as the
    official network does (its head always covers all L tokens)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.inner = net
        self.cfg = net.cfg

    def forward(self, ids, labels, prev=None, logits_at: str = "all", num_masked: int | None = None):
        out = self.inner(ids, labels, prev=prev, logits_at="all", num_masked=num_masked)  # (B, L, V)
        if logits_at != "masked":
            return out
        masking = ids == self.cfg.mask_id
        B, V = ids.shape[0], out.logits.shape[-1]
        logits = out.logits[masking].reshape(B, -1, V)  # (B, Lm, V): every row masks the same count
        return dataclasses.replace(out, logits=logits)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, steps: int, warmup: int) -> dict:
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"seconds_per_step": dt / steps, "peak_memory_gib": None if peak is None else peak / 2**30}


def bench_model(name: str, cfg, batch_size: int, steps: int, warmup: int, device: torch.device, amp: bool,
                compile_net: bool, peak_flops: float | None) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(0, cfg.codebook_size, (batch_size, cfg.seq_len), generator=g).to(device),
             "label": torch.randint(0, cfg.num_classes, (batch_size,), generator=g).to(device)}
    flops = training_flops_per_sample(cfg, reuse_prob=0.5)
    row = {"model": name, "params_m": sum(p.numel() for p in ENATModule(cfg).net.parameters()) / 1e6,
           "batch": batch_size, "train_flops_per_sample": flops}
    for case in ("ours", "official_pattern"):
        torch.manual_seed(0)
        module = _attach(ENATModule(cfg, reuse_prob=0.5, warmup_steps=0, compile=compile_net and case == "ours"),
                         "gpu" if device.type == "cuda" else "cpu").to(device).train()
        r = measure(make_step(module, batch, case == "official_pattern", device, amp), device, steps, warmup)
        r["img_per_s"] = batch_size / r["seconds_per_step"]
        r["mfu"] = flops * r["img_per_s"] / peak_flops if peak_flops else None
        row[case] = r
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row["speedup"] = row["ours"]["img_per_s"] / row["official_pattern"]["img_per_s"]
    return row


def memory_table(batch: int = 256, gpus: int = 8) -> str:
    """The markdown table of docs/scaling.md: GiB per GPU at ``batch`` per GPU, DDP vs FSDP2 over ``gpus``."""
    from enat_lightning.sharding import training_memory

    lines = ["| model | params | strategy | weights | grads | AdamW | EMA | activations (est.) | total / GPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
    for name in ("enat-s", "enat-b", "enat-l"):
        cfg = preset(name)
        for sharded in (False, True):
            m = training_memory(cfg, batch, gpus, sharded=sharded)
            lines.append(f"| {name.upper()} | {m['params'] / 1e6:.1f}M | {'FSDP2 / ' + str(gpus) if sharded else 'DDP'} "
                         f"| {gib(m['weights'])} | {gib(m['grads'])} | {gib(m['adamw'])} | {gib(m['ema'])} "
                         f"| {gib(m['activations'])} | {gib(m['total'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="enat-s,enat-b,enat-l")
    ap.add_argument("--batch", type=int, default=256, help="per GPU")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile our network (model.compile)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, CPU, 2 steps: checks the script runs")
    ap.add_argument("--memory-table", action="store_true", help="print the memory table of docs/scaling.md")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.memory_table:
        print(memory_table())
        return 0
    if args.smoke:
        device, amp, peak = torch.device("cpu"), False, None
        models, batch, steps, warmup = [("smoke", SMOKE_CFG)], 4, 2, 1
    else:
        if not torch.cuda.is_available():
            print("benchmarks/gpu_train.py needs a CUDA GPU and none is visible; --smoke checks the script on "
                  "the CPU, --memory-table needs no GPU", file=sys.stderr)
            return 2
        from lightning.fabric.utilities.throughput import get_available_flops

        device, amp = torch.device("cuda", 0), True
        peak = get_available_flops(device, torch.bfloat16)
        models = [(m, preset(m)) for m in args.models.split(",")]
        batch, steps, warmup = args.batch, args.steps, args.warmup
    rows = [bench_model(name, cfg, batch, steps, warmup, device, amp, args.compile, peak) for name, cfg in models]
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)"
    print(f"{dev}, batch {batch}/GPU, {'bf16 autocast' if amp else 'fp32'}, reuse_prob 0.5"
          + ("" if peak else "; no peak FLOP/s known: no MFU"))
    print(f"{'model':<10}{'case':<18}{'img/s':>10}{'MFU':>8}{'peak GiB':>10}")
    for r in rows:
        for case in ("ours", "official_pattern"):
            c = r[case]
            mfu = f"{100 * c['mfu']:.1f}%" if c["mfu"] is not None else "n/a"
            mem = f"{c['peak_memory_gib']:.2f}" if c["peak_memory_gib"] is not None else "n/a"
            print(f"{r['model']:<10}{case:<18}{c['img_per_s']:>10.1f}{mfu:>8}{mem:>10}")
        print(f"{'':<10}{'ours / official':<18}{r['speedup']:>10.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": dev, "peak_flops": peak, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
