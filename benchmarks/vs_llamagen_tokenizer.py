"""Tokenizer training step against LlamaGen's own (issue 22): same VQ-16 network, batch, losses and weights.

    python benchmarks/vs_llamagen_tokenizer.py --llamagen-repo /path/to/LlamaGen [--image-size 128] [--json out.json]

``--llamagen-repo`` is a checkout of github.com/FoundationVision/LlamaGen made by the user; nothing of it
is stored in this repository. At run time this script imports its ``VQ_models`` (tokenizer_image/vq_model.py)
and ``VQLoss`` (tokenizer_image/vq_loss.py: LPIPS with the checkout's ``cache/vgg.pth`` linear layers,
PatchGAN, hinge losses). LPIPS's VGG16 backbone would be downloaded by torchvision there; here it is built
randomly initialised (offline) and the same backbone weights are copied to our side, so both compute the
same LPIPS.

Both sides, from identical weights (LlamaGen's random-init VQ-16 loaded into our ``LlamaGenVQ``, its
discriminator's and LPIPS's weights into ours):

* **LlamaGen**: ``vq_train.py``'s step: ``VQModel`` forward, ``VQLoss`` generator loss (L2 + LPIPS +
  codebook + commitment (+ 0.5 x hinge GAN loss after ``disc_start``); no adaptive weight: its default),
  backward, grad clip 1.0, Adam; then the discriminator update ``VQLoss(optimizer_idx=1)``, clip, Adam.
* **ours**: ``enat_lightning.tokenizers.LlamaGenVQ`` + the loss functions of
  ``enat_lightning.tokenizer_training.losses`` (reconstruction_loss, the ``lpips`` wheel's LPIPS,
  PatchGAN, hinge_g_loss / hinge_d_loss), in the order of ``VQTokenizerModule.training_step`` (one
  generator update, then one discriminator update once the GAN is on), with the same clip and Adam.
  Outside Lightning: ``VQTokenizerModule`` builds its own VQGAN-family autoencoder, not this network.

Two phases, each timed separately: ``warmup`` (before ``disc_start``: LlamaGen's first 20k steps, where its
step still runs the discriminator forward and backward with weight 0 and ours skips it) and ``gan`` (after).
Rounds interleave the two sides (order alternating) in one process on a possibly shared machine: only the
ratios of the same round are meaningful. Ratio = LlamaGen time / our time (> 1: ours faster).

Loss equality: the first step of the first phase, from identical weights on each side; LlamaGen's terms
are read from its own log line (4 decimals), its total exactly. Pass ``--phases gan,warmup`` to check the
GAN terms instead. Every network is built once; the phases switch ``disc_start`` on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import matmul_peak_gflops  # noqa: E402

from enat_lightning.tokenizer_training.losses import (PatchGAN, hinge_d_loss, hinge_g_loss,  # noqa: E402
                                                      load_lpips, reconstruction_loss)
from enat_lightning.tokenizers.llamagen import PRESETS, LlamaGenVQ, load_llamagen_weights  # noqa: E402

DISC_WEIGHT = 0.5   # vq_train.py --disc-weight default
CLIP = 1.0          # vq_train.py --max-grad-norm default
LR, BETAS = 1e-4, (0.9, 0.95)  # vq_train.py: Adam(lr, betas=(beta1, beta2))


# -- LlamaGen, from the user's checkout ---------------------------------------------------------------
class _Recorder:
    """Stands in for vq_train.py's logger: VQLoss reports its loss terms only through logger.info."""

    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)


def import_llamagen(repo: Path):
    if not (repo / "tokenizer/tokenizer_image/vq_loss.py").is_file():
        raise SystemExit(f"{repo}: no tokenizer/tokenizer_image/vq_loss.py; is this a checkout of "
                         "FoundationVision/LlamaGen?")
    if not (repo / "tokenizer/tokenizer_image/cache/vgg.pth").is_file():
        raise SystemExit(f"{repo}/tokenizer/tokenizer_image/cache/vgg.pth missing (LPIPS linear layers; part of "
                         "the LlamaGen repository): LlamaGen would download it")
    sys.path.insert(0, str(repo))
    import torchvision

    import tokenizer.tokenizer_image.lpips as their_lpips  # noqa: E402
    # their vgg16 asks torchvision for ImageNet weights (a download): random init instead, copied to ours
    their_lpips.models = types.SimpleNamespace(vgg16=lambda pretrained=True: torchvision.models.vgg16(weights=None))
    from tokenizer.tokenizer_image.vq_loss import VQLoss
    from tokenizer.tokenizer_image.vq_model import VQ_models
    return VQ_models, VQLoss


class Theirs:
    def __init__(self, VQ_models, VQLoss, disc_start: int, image_size: int):
        self.model = VQ_models["VQ-16"](codebook_size=16384, codebook_embed_dim=8)
        self.loss = VQLoss(disc_start=disc_start, disc_weight=DISC_WEIGHT, disc_type="patchgan", disc_loss="hinge",
                           gen_adv_loss="hinge", image_size=image_size, reconstruction_loss="l2",
                           reconstruction_weight=1.0, perceptual_weight=1.0, codebook_weight=1.0)
        # `codebook_used` is registered as a buffer holding an nn.Parameter (requires_grad): on a GPU,
        # vq_train.py's .to(device) turns it into a non-leaf and its in-place rolling update works; on the
        # CPU .to() is a no-op and the update raises. Detached here (the cheaper of the two for them).
        self.model.quantize.codebook_used = self.model.quantize.codebook_used.detach()
        self.model.train()
        self.loss.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, betas=BETAS)
        self.opt_d = torch.optim.Adam(self.loss.discriminator.parameters(), lr=LR, betas=BETAS)
        self.log = _Recorder()

    def step(self, x: torch.Tensor, step: int, log: bool = False) -> dict:
        """vq_train.py's loop body, x in [-1, 1]."""
        every = 1 if log else 10**12
        self.opt.zero_grad()
        rec, codebook_loss = self.model(x)
        loss = self.loss(codebook_loss, x, rec, optimizer_idx=0, global_step=step,
                         last_layer=self.model.decoder.last_layer, logger=self.log, log_every=every)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.opt_d.zero_grad()
        d_loss = self.loss(codebook_loss, x, rec, optimizer_idx=1, global_step=step, logger=self.log, log_every=every)
        d_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.loss.discriminator.parameters(), CLIP)
        self.opt_d.step()
        return {"loss": loss.item(), "d_loss": d_loss.item()}


# -- ours ----------------------------------------------------------------------------------------------
class Ours:
    def __init__(self, theirs: Theirs, disc_start: int):
        self.model = load_llamagen_weights(LlamaGenVQ(PRESETS["vq-16"]), theirs.model.state_dict(), "LlamaGen")
        self.lpips = load_lpips("vgg", "random")
        missing, unexpected = self.lpips.load_state_dict(theirs.loss.perceptual_loss.state_dict(), strict=False)
        missing = [k for k in missing if not k.startswith("lins.")]  # the wheel's alias list of lin0..lin4
        if missing or unexpected:
            raise SystemExit(f"LPIPS layouts differ: missing {missing}, unexpected {unexpected}")
        self.disc = PatchGAN(64, 3)
        theirs_d = list(theirs.loss.discriminator.state_dict().values())
        ours_d = self.disc.state_dict()
        if [tuple(v.shape) for v in theirs_d] != [tuple(v.shape) for v in ours_d.values()]:
            raise SystemExit("PatchGAN layouts differ from LlamaGen's NLayerDiscriminator")
        self.disc.load_state_dict(dict(zip(ours_d, theirs_d)))
        self.disc_start = disc_start
        self.model.train()
        self.disc.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, betas=BETAS)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=LR, betas=BETAS)

    def step(self, x: torch.Tensor, step: int) -> dict:
        """VQTokenizerModule.training_step's order on the LlamaGen network, x in [-1, 1] (its range)."""
        gan_on = step >= self.disc_start
        out = self.model(x)
        rec = reconstruction_loss(out.reconstruction, x, "l2")
        with torch.autocast(x.device.type, enabled=False):
            p = self.lpips(out.reconstruction.float(), x.float()).mean()
        nll = rec + p
        loss = nll + out.quantized.codebook_loss + out.quantized.commit_loss
        terms = {"rec_loss": rec.item(), "perceptual_loss": p.item(), "vq_loss": out.quantized.codebook_loss.item(),
                 "commit_loss": out.quantized.commit_loss.item()}
        if gan_on:
            g = hinge_g_loss(self.disc(out.reconstruction))
            loss = loss + DISC_WEIGHT * g
            terms["generator_adv_loss"] = DISC_WEIGHT * g.item()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        terms["loss"] = loss.item()
        if gan_on:
            real, fake = self.disc(x), self.disc(out.reconstruction.detach())
            d_loss = DISC_WEIGHT * hinge_d_loss(real, fake)  # LlamaGen weighs the D loss by disc_weight too
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), CLIP)
            self.opt_d.step()
            terms["d_loss"] = d_loss.item()
        return terms


def their_terms(line: str) -> dict:
    """'(Generator) rec_loss: 0.1234, perceptual_loss: ...' -> {name: value}."""
    body = line.split(")", 1)[1]
    return {k.strip(): float(v) for k, v in (kv.split(":") for kv in body.split(","))}


def set_phase(theirs: "Theirs", ours: "Ours", gan: bool) -> None:
    """warmup: the GAN is off (step < disc_start) on both sides; gan: on from the first step."""
    start = 0 if gan else 10**12
    theirs.loss.discriminator_iter_start = start
    ours.disc_start = start


def loss_equality(theirs: "Theirs", ours: "Ours", x: torch.Tensor) -> dict:
    """One step on each side from the same weights (run first, while both sides still hold them)."""
    # vq_train.py calls vq_loss.train(), which puts LPIPS's dropout-before-linear layers in training mode
    # too (a LlamaGen quirk: its LPIPS is random at train time); ours is in eval mode. For the equality
    # check only, their LPIPS runs in eval mode; the timed steps keep their train-mode dropout.
    theirs.loss.perceptual_loss.eval()
    theirs.log.lines.clear()
    t = theirs.step(x, step=1, log=True)
    t.update(their_terms(theirs.log.lines[0]))
    theirs.loss.perceptual_loss.train()
    o = ours.step(x, step=1)
    rows = {}
    for name in ("loss", "rec_loss", "perceptual_loss", "vq_loss", "commit_loss", "generator_adv_loss", "d_loss"):
        if name in o:
            rows[name] = {"llamagen": t[name], "ours": o[name]}
    return rows


def time_steps(fn, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def bench_phase(theirs: "Theirs", ours: "Ours", x: torch.Tensor, rounds: int, steps: int) -> dict:
    counter = iter(range(2, 10**9))
    run_theirs = lambda: theirs.step(x, next(counter))  # noqa: E731
    run_ours = lambda: ours.step(x, next(counter))  # noqa: E731
    per_round = []
    for r in range(rounds):
        if r % 2 == 0:
            t_theirs, t_ours = time_steps(run_theirs, steps), time_steps(run_ours, steps)
        else:
            t_ours, t_theirs = time_steps(run_ours, steps), time_steps(run_theirs, steps)
        per_round.append({"llamagen_s": t_theirs, "ours_s": t_ours, "ratio": t_theirs / t_ours})
        print(f"  round {r}: llamagen {t_theirs:.3f} s/step  ours {t_ours:.3f} s/step  ratio {t_theirs / t_ours:.3f}",
              flush=True)
    ratios = [r["ratio"] for r in per_round]
    return {"rounds": per_round, "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llamagen-repo", type=Path, required=True,
                    help="a checkout of github.com/FoundationVision/LlamaGen")
    ap.add_argument("--image-size", type=int, default=128, help="LlamaGen trains at 256; 128 keeps a CPU run short")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per side and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--phases", default="gan,warmup", help="the first one also checks the losses")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    VQ_models, VQLoss = import_llamagen(args.llamagen_repo.resolve())
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    results = {"image_size": args.image_size, "batch": args.batch, "threads": args.threads,
               "loadavg_start": os.getloadavg(), "matmul_peak_gflops": matmul_peak_gflops(), "phases": {}}
    torch.manual_seed(0)
    theirs = Theirs(VQ_models, VQLoss, disc_start=10**12, image_size=args.image_size)
    ours = Ours(theirs, disc_start=10**12)  # LlamaGen's weights (model, LPIPS, discriminator) copied in
    for i, phase in enumerate(args.phases.split(",")):
        set_phase(theirs, ours, gan={"warmup": False, "gan": True}[phase])
        res = {}
        if i == 0:  # both sides still hold the same weights
            res["losses"] = eq = loss_equality(theirs, ours, x)
            print(f"[{phase}] losses, one step from identical weights (LlamaGen's terms printed to 4 decimals):")
            for name, v in eq.items():
                print(f"  {name:20s} llamagen {v['llamagen']:.6f}  ours {v['ours']:.6f}", flush=True)
        else:
            theirs.step(x, 1), ours.step(x, 1)  # warm-up of the new code path
        print(f"[{phase}] timing, {args.rounds} interleaved rounds of {args.steps} steps per side", flush=True)
        res.update(bench_phase(theirs, ours, x, args.rounds, args.steps))
        results["phases"][phase] = res
        print(f"[{phase}] ratio (LlamaGen / ours) median {res['ratio_median']:.3f} "
              f"(min {res['ratio_min']:.3f}, max {res['ratio_max']:.3f})", flush=True)
    results["loadavg_end"] = os.getloadavg()
    print(f"fp32 matmul peak {results['matmul_peak_gflops']:.1f} GFLOP/s; load average "
          f"{results['loadavg_start'][0]:.1f} -> {results['loadavg_end'][0]:.1f}")
    if args.json:
        from enat_lightning.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
