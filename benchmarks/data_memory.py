"""Data pipeline memory and speed: stream synthetic token shards through TokenShardDataModule.

Builds (once, cached) a large synthetic shard set (default 1 000 000 samples of 16x16 ids + flip +
label: the ImageNet-256 layout), streams a fixed number of samples from it and from a 10x smaller
subset through the DataModule with 2 workers, and prints for each: peak memory of the whole loader
(trainer process + workers, summed PSS so pages shared after fork count once; and the largest
single-process RSS) and samples/s. Then compares samples/s with the ENAT-S training consumption
rate: measured here as forward + backward at batch 16 (``--step-rate`` to pass a rate measured
elsewhere, e.g. on the training GPU), plus a FLOP-based upper bound for one H100.

Usage: python benchmarks/data_memory.py [--dir /tmp/enat_bench_shards] [--samples 1000000]
       [--stream 200000] [--workers 2] [--step-rate SAMPLES_PER_S] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from enat_lightning.data.datamodule import TokenShardDataModule  # noqa: E402
from enat_lightning.data.format import MANIFEST_NAME, Manifest, Sample, ShardInfo, write_manifest, write_shard  # noqa: E402

SIDE, CODEBOOK, CLASSES = 16, 1024, 1000
H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense bf16 tensor-core peak


def _write_one(args) -> int:
    path, start, n, seed = args
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(start, start + n):
        t = rng.integers(0, CODEBOOK, (SIDE, SIDE), dtype=np.uint16)
        samples.append(Sample(key=f"{i:09d}", tokens=t, label=int(rng.integers(CLASSES)), flip=t[:, ::-1]))
    return write_shard(path, samples, CODEBOOK)


def build_synthetic(out: Path, n: int, shard_size: int, procs: int) -> Path:
    """n synthetic samples in shards of shard_size under ``out`` (reused when already complete)."""
    m = out / MANIFEST_NAME
    if m.is_file() and json.loads(m.read_text())["sample_count"] == n:
        return out
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out / f"syn-{k:06d}.tar", k * shard_size, min(shard_size, n - k * shard_size), k)
            for k in range(-(-n // shard_size))]
    t = time.perf_counter()
    with ProcessPoolExecutor(procs) as pool:
        counts = list(pool.map(_write_one, jobs, chunksize=1))
    shards = [ShardInfo(p.name, c) for (p, *_), c in zip(jobs, counts)]
    write_manifest(out, Manifest(sample_count=n, shards=shards, codebook_size=CODEBOOK, latent_side=SIDE,
                                 num_classes=CLASSES, tokenizer={"kind": "synthetic"}, has_flip=True,
                                 source={"benchmark": "data_memory"}))
    print(f"wrote {n} samples in {len(shards)} shards to {out} in {time.perf_counter() - t:.0f} s")
    return out


# ---- memory of this process and its children (DataLoader workers) from /proc ----

def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


def _kb(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryMonitor:
    """Samples every 0.1 s: summed PSS of this process + children, and the largest single RSS."""

    def __init__(self) -> None:
        self.peak_pss_kb = self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids = [me] + _children(me)
            pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
            rss = max(_kb(f"/proc/{p}/status", "VmRSS") for p in pids)
            self.peak_pss_kb, self.peak_rss_kb = max(self.peak_pss_kb, pss), max(self.peak_rss_kb, rss)
            time.sleep(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def stream(spec: str, samples: int, batch_size: int, workers: int) -> dict:
    dm = TokenShardDataModule(spec, batch_size=batch_size, num_workers=workers, shuffle_buffer=1000,
                              batches_per_epoch=samples // batch_size, codebook_size=CODEBOOK,
                              latent_side=SIDE, num_classes=CLASSES)
    dm.setup("fit")
    n = 0
    with MemoryMonitor() as mon:
        loader = dm.train_dataloader()
        t = time.perf_counter()
        for i, b in enumerate(loader):
            if i == 0:  # exclude worker start-up (fork + first shard open) from the rate
                t, n = time.perf_counter(), 0
            n += b["tokens"].shape[0]
        dt = time.perf_counter() - t
    return {"dataset_samples": dm.manifest().sample_count, "streamed": n, "samples_per_s": n / dt,
            "peak_pss_mb": mon.peak_pss_kb / 1024, "peak_process_rss_mb": mon.peak_rss_kb / 1024}


def enat_s_rates(batch: int = 16, steps: int = 2) -> dict:
    """ENAT-S forward + backward (masked-token CE) at ``batch`` on this CPU, and FLOPs per sample."""
    from _peak import count_flops

    from enat_lightning.models import ENAT, preset

    cfg = preset("enat-s")
    model = ENAT(cfg).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.codebook_size, (batch, cfg.seq_len), generator=g)
    order = torch.rand(batch, cfg.seq_len, generator=g).argsort(1)
    masked = ids.clone().scatter_(1, order[:, : cfg.seq_len // 2], cfg.mask_id)  # half masked (~E[Beta(12,3)]-ish)
    labels = torch.randint(0, cfg.num_classes, (batch,), generator=g)

    def step():
        out = model(masked, labels, logits_at="masked")
        target = torch.gather(ids, 1, order[:, : cfg.seq_len // 2].sort(1).values)
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), target.reshape(-1))
        loss.backward()

    flops = count_flops(step)
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t) / steps
    return {"cpu_samples_per_s": batch / dt, "train_flops_per_sample": flops / batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/enat_bench_shards"))
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--stream", type=int, default=200_000, help="samples to stream per dataset size")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--step-rate", type=float, default=None,
                    help="ENAT-S training consumption in samples/s (default: measure fwd+bwd here at batch 16)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    build_synthetic(args.dir, args.samples, args.shard_size, procs=max(1, min(4, os.cpu_count() or 1)))
    n_small_shards = max(1, -(-args.samples // args.shard_size) // 10)
    small = f"{args.dir}/syn-{{000000..{n_small_shards - 1:06d}}}.tar"
    results = {"small": stream(small, args.stream, args.batch_size, args.workers),
               "large": stream(str(args.dir), args.stream, args.batch_size, args.workers)}
    rates = enat_s_rates() if args.step_rate is None else {}
    consume = args.step_rate or rates["cpu_samples_per_s"]
    report = {"workers": args.workers, "batch_size": args.batch_size, **results, "enat_s": {
        "consumption_samples_per_s": consume, "source": "--step-rate" if args.step_rate else "measured fwd+bwd, CPU",
        **rates}}
    if "train_flops_per_sample" in rates:
        report["enat_s"]["h100_upper_bound_samples_per_s"] = H100_BF16_DENSE_TFLOPS * 1e12 / rates["train_flops_per_sample"]
    for name, r in results.items():
        print(f"{name:5s} dataset {r['dataset_samples']:>9,d} samples: peak PSS (loader + {args.workers} workers) "
              f"{r['peak_pss_mb']:.0f} MB, largest process RSS {r['peak_process_rss_mb']:.0f} MB, "
              f"{r['samples_per_s']:,.0f} samples/s = {r['samples_per_s'] / consume:,.1f}x ENAT-S consumption "
              f"({consume:,.1f} samples/s, {report['enat_s']['source']})")
    if "h100_upper_bound_samples_per_s" in report["enat_s"]:
        ub = report["enat_s"]["h100_upper_bound_samples_per_s"]
        print(f"ENAT-S training needs {rates['train_flops_per_sample'] / 1e9:.1f} GFLOP/sample: one H100 at its "
              f"100% bf16 peak would consume <= {ub:,.0f} samples/s; the loader gives "
              f"{results['large']['samples_per_s'] / ub:.2f}x that per {args.workers} workers "
              f"(scale workers per GPU accordingly)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
