"""Per-change gains of the issue-18 speed-ups, each A/B-timed in one process (ours before vs after).

    python benchmarks/speed_changes.py --before-enat PATH/TO/OLD/enat_lightning/models/enat.py [--repeats 5]

``--before-enat``: the ``models/enat.py`` of a commit before the changes (e.g. ``git show
<commit>:enat_lightning/models/enat.py > /tmp/enat_before.py``); it is loaded inside this package, so
it runs on today's blocks and token helpers (which keep the old call forms). Each line times the same
work both ways, interleaved, and prints before/after medians and their ratio:

* network internals (one argsort + one scatter for ``feat``, the context normalised once per
  forward instead of once per block, the reuse path's visible set by one gather instead of a
  zero-filled buffer and two scatters): ``generate`` (ENAT-S, batch 8, 8 steps, cfg 2.5) and the
  online forward + backward of a training step, without and with reuse;
* the reuse teacher without the output head (``logits_at="none"``);
* the idle-parameter touch: every encoder parameter vs only the idle ones (a no-reuse backward);
* AdamW: the default per-tensor loop vs ``fused=True``, over ENAT-S's parameters.

Without ``--before-enat`` only the later changes are timed, each by switching it off and on in
today's code (``generate`` on ENAT-S, batch 8, 8 steps, cfg 2.5 unless said):

* fused linear + GELU (oneDNN, CPU inference) vs the two-op path;
* every block's adaLN modulation cached in the condition vs recomputed at every step;
* the sampler passing ``num_masked`` (no per-step validation) vs validating every forward;
* the reuse teacher without the decoder (``decode=False``) vs with it (training batch 16, U = 0.5);
* the logged gradient norm by ``torch.nn.utils.get_total_norm`` vs Lightning's ``grad_norm``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from enat_lightning.masking import apply_mask, masked_ce, random_positions, sample_reuse_mask
from enat_lightning.models import ENAT, preset
from enat_lightning.sampling import generate


def load_before(path: Path):
    spec = importlib.util.spec_from_file_location("enat_lightning.models._enat_before", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "enat_lightning.models"
    spec.loader.exec_module(mod)
    return mod.ENAT


CLOCK = time.perf_counter  # --clock cpu: process CPU time, steadier on an oversubscribed machine (1 thread)


def ab(before, after, repeats: int) -> tuple[list, list]:
    before(), after()  # warm-up
    tb, ta = [], []
    for i in range(repeats):
        for fn, ts in ((before, tb), (after, ta)) if i % 2 == 0 else ((after, ta), (before, tb)):
            t = CLOCK()
            fn()
            ts.append(CLOCK() - t)
    return tb, ta


def report(name: str, tb: list, ta: list) -> dict:
    ratios = sorted(b / a for b, a in zip(tb, ta))
    mb, ma = statistics.median(tb), statistics.median(ta)
    print(f"{name:<54} before {mb:8.3f} s  after {ma:8.3f} s  gain {mb / ma:5.2f}x "
          f"(per-pair {ratios[0]:.2f}-{ratios[-1]:.2f}, n={len(ratios)})", flush=True)
    return {"change": name, "before_s": mb, "after_s": ma, "gain": mb / ma}


def later_changes(repeats: int) -> list[dict]:
    """The second round of changes, each switched off (before) and on (after) in today's code."""
    from unittest import mock

    from lightning.pytorch.utilities import grad_norm

    from enat_lightning.models import blocks
    from enat_lightning.models.conditioning import Condition

    cfg = preset("enat-s")
    torch.manual_seed(0)
    net = ENAT(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    labels = torch.arange(8)
    kw = dict(steps=8, cfg_scale=2.5, mask_temp=1.5, samp_temp=6.0)
    ids = {}

    def sampler(key, *patches):
        def run():
            with contextlib.ExitStack() as stack:
                for patch in patches:
                    stack.enter_context(patch)
                ids[key] = generate(net, labels, generator=torch.Generator().manual_seed(0), **kw)
        return run

    rows = []
    unfused = mock.patch.object(blocks, "_fusable", lambda x, fc: False)
    rows.append(report("fused linear+GELU: generate (8 images)", *ab(sampler("b", unfused), sampler("a"), repeats)))
    print(f"  identical ids: {torch.equal(ids['a'], ids['b'])}")
    uncached = mock.patch.object(Condition, "caching_modulation", lambda self: self)
    rows.append(report("adaLN modulation cached: generate (8 images)", *ab(sampler("b", uncached), sampler("a"), repeats)))
    print(f"  identical ids: {torch.equal(ids['a'], ids['b'])}")
    forward = ENAT.forward
    validating = mock.patch.object(ENAT, "forward", lambda self, *a, num_masked=None, **k: forward(self, *a, **k))
    rows.append(report("sampler passes num_masked: generate (8 images)", *ab(sampler("b", validating), sampler("a"), repeats)))
    print(f"  identical ids: {torch.equal(ids['a'], ids['b'])}")

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.codebook_size, (16, cfg.seq_len), generator=g)
    y = torch.randint(0, cfg.num_classes, (16,), generator=g)
    masking = random_positions(tuple(tokens.shape), 205, g)
    prev_mask = sample_reuse_mask(masking, g, fraction=0.5)
    n_prev, prev_ids = int(prev_mask[0].sum()), apply_mask(tokens, prev_mask, cfg.mask_id)

    def teacher(decode):
        def run():
            with torch.no_grad():
                net(prev_ids, y, logits_at="none", decode=decode, num_masked=n_prev)
        return run
    rows.append(report("reuse teacher without the decoder (batch 16)", *ab(teacher(True), teacher(False), repeats)))

    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    grads = [p.grad for p in net.parameters()]
    rows.append(report("grad norm: torch get_total_norm vs Lightning grad_norm",
                       *ab(lambda: grad_norm(net, norm_type=2)["grad_2.0_norm_total"],
                           lambda: torch.nn.utils.get_total_norm(grads, 2.0), repeats)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-enat", type=Path, help="models/enat.py of a commit before the first changes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"threads {args.threads}, clock {args.clock}, medians of {args.repeats} interleaved pairs")
    torch.set_num_threads(args.threads)
    if args.before_enat is None:
        later_changes(args.repeats)
        return
    cfg = preset("enat-s")
    torch.manual_seed(0)
    new = ENAT(cfg)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    old = load_before(args.before_enat)(cfg)
    old.load_state_dict(new.state_dict())
    rows = []

    # network internals: sampling
    new.eval(), old.eval()
    labels = torch.arange(8)
    kw = dict(steps=8, cfg_scale=2.5, mask_temp=1.5, samp_temp=6.0)
    ids = {}
    def sampler(net, key):
        return lambda: ids.__setitem__(key, generate(net, labels, generator=torch.Generator().manual_seed(0), **kw))
    rows.append(report("network internals: generate (8 images)", *ab(sampler(old, "b"), sampler(new, "a"), args.repeats)))
    print(f"  identical ids before/after: {torch.equal(ids['a'], ids['b'])}")

    # network internals: training forward + backward
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.codebook_size, (16, cfg.seq_len), generator=g)
    y = torch.randint(0, cfg.num_classes, (16,), generator=g)
    n = 205  # round(0.8 * 256)
    masking = random_positions(tuple(tokens.shape), n, g)
    prev_mask = sample_reuse_mask(masking, g)
    n_prev = int(prev_mask[0].sum())
    x, prev_ids = apply_mask(tokens, masking, cfg.mask_id), apply_mask(tokens, prev_mask, cfg.mask_id)
    with torch.no_grad():
        prev = new(prev_ids, y, logits_at="none", num_masked=n_prev)
    new.train(), old.train()

    def fwd_bwd(net, reuse, trusted):
        def run():
            torch.manual_seed(1)
            extra = {"num_masked": n} if trusted else {}
            out = net(x, y, prev=prev if reuse else None, logits_at="masked", **extra)
            masked_ce(out.logits, tokens, masking, 0.1).backward()
        return run
    for reuse in (False, True):
        name = f"network internals: training fwd+bwd, {'reuse' if reuse else 'no reuse'}"
        rows.append(report(name, *ab(fwd_bwd(old, reuse, False), fwd_bwd(new, reuse, True), args.repeats)))

    # teacher without head
    new.eval()
    def teacher(logits_at):
        def run():
            with torch.no_grad():
                new(prev_ids, y, logits_at=logits_at, num_masked=n_prev)
        return run
    rows.append(report("reuse teacher: no output head", *ab(teacher("masked"), teacher("none"), args.repeats)))

    # idle-parameter touch
    new.train()
    def touch(params):
        def run():
            torch.manual_seed(1)
            out = new(x, y, logits_at="masked", num_masked=n)
            loss = masked_ce(out.logits, tokens, masking, 0.1) + sum(p.reshape(-1)[:1].sum() for p in params) * 0.0
            loss.backward()
            new.zero_grad(set_to_none=True)
        return run
    all_enc = [*new.encoder.parameters(), *new.reuse_proj.parameters()]
    rows.append(report("idle-parameter touch: idle ones only (no-reuse step)",
                       *ab(touch(all_enc), touch(new.idle_parameters(reuse=False)), args.repeats)))

    # AdamW
    for p in new.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    hp = dict(lr=1e-4, betas=(0.99, 0.99), weight_decay=0.03)
    loop, fused = torch.optim.AdamW(new.parameters(), **hp), torch.optim.AdamW(new.parameters(), fused=True, **hp)
    rows.append(report("AdamW fused", *ab(loop.step, fused.step, args.repeats)))


if __name__ == "__main__":
    sys.exit(main())
