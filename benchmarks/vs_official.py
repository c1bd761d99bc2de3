"""Speed against the official ENAT code itself (issue 18): sampler and training step, same weights.

    python benchmarks/vs_official.py --official-repo /path/to/ENAT [--rounds 5] [--json out.json]

``--official-repo`` is a checkout of github.com/LeapLabTHU/ENAT made by the user; nothing of it is
stored in this repository. At run time this script imports its network (``libs/models.py``, with the
``timm`` copy vendored in that checkout; needs ``einops``) and its sampler (``libs/nat_misc.py``
``NATSchedule.generate``), and extracts ``LSimple`` / ``mask_by_confidence`` from ``train.py`` and
``ema`` / ``get_grad_norm_`` from ``utils.py`` by source (those two files import the training stack: accelerate, loguru,
the data set), executing only those functions. The official ENAT-S network (random init, then every
weight perturbed so the adaLN blocks compute something) is loaded into ours with ``from_official``.

Checks, then times, interleaving official and ours in one process (the machine may be shared: load
changes hit both sides alike; only the ratios are meaningful):

* sampling: ``NATSchedule.generate`` vs ``enat_lightning.sampling.generate``; 8 steps, guidance 2.5,
  batch 8, fp32. Ids must be identical: checked with deterministic temperatures (mask_temp 0,
  samp_temp 1e-6, i.e. argmax draws; the two samplers use different random streams otherwise); the
  timed runs use the default settings (mask_temp 1.5, samp_temp 6).
* training step: batch 16, mask ratio fixed at the Beta(12, 3) mean (0.8: Beta(12e6, 3e6) on both
  sides), reuse forced off and on (the 50/50 mix is their mean). Official: ``optimizer.zero_grad()``,
  ``LSimple`` (EMA teacher), ``backward``, AdamW step, LambdaLR step, ``ema`` update and the
  gradient norm it logs (``get_grad_norm_``) every step, as its ``train_step``. Ours: ``ENATModule``
  under a real ``lightning.Trainer`` logging as our ``experiments/enat_s.yaml`` does (every 50 steps;
  ``--log-every-n-steps 1``: every step, with the accuracy and grad norm it then computes);
  one ``fit`` per mode, its first round an untimed warm-up, the official rounds run from its
  callback hooks between ours (``_Interleaved``), per-batch times from the same hooks. A reuse step's cost
  depends on its draw U (k = round(U * #visible) tokens newly revealed): step i of a round runs at
  the same U = (i + 0.5) / n on both sides (strata of Uniform(0, 1); the official ``torch.rand(1)``
  returns it, ours gets it through ``sample_reuse_mask(fraction=)``) and the round's reuse time is
  the mean over them; no-reuse steps are alike, their median is taken. Each mode runs in its own
  fresh process (a process slows down over a long run on this VM: a mode timed after the other in
  the same process would pay for it). Losses must be equal: the official
  ``LSimple`` is run with a recorder on its networks and our network + ``masked_ce`` replay the
  recorded inputs (eval mode, so no dropout or label drop differs).

Prints the fp32 matmul peak of the same run, per-round ratios, their median and spread.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import matmul_peak_gflops  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import enat_lightning.module as module_code  # noqa: E402
from enat_lightning.masking import masked_ce, sample_reuse_mask  # noqa: E402
from enat_lightning.models import from_official, preset  # noqa: E402
from enat_lightning.module import ENATModule  # noqa: E402
from enat_lightning.sampling import generate  # noqa: E402

BETA_MEAN_08 = (12e6, 3e6)  # Beta(12, 3) has mean 0.8; this one has the same mean and ~0 spread


# -- the official code, loaded from the user's checkout -------------------------------------------------
def _functions_from_source(path: Path, names: tuple[str, ...], namespace: dict) -> dict:
    """Executes only the named top-level functions of a file (its imports are not run)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = set(names) - {n.name for n in found}
    if missing:
        raise SystemExit(f"{path}: functions {sorted(missing)} not found; is this a checkout of LeapLabTHU/ENAT?")
    for node in found:
        node.decorator_list = []
    exec(compile(ast.Module(body=found, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


class _FixedScalarDraws:
    """``torch`` for the official ``LSimple``: everything as torch, except that a one-element
    ``torch.rand(1)`` (its reuse coin and its U in k = round(U * #visible)) returns ``value`` when set,
    so both codes can be timed at the same k. Larger draws (the mask positions) stay random."""

    def __init__(self):
        self.value: float | None = None

    def __getattr__(self, name):
        return getattr(torch, name)

    def rand(self, *size, **kwargs):
        out = torch.rand(*size, **kwargs)
        return out.fill_(self.value) if self.value is not None and out.numel() == 1 else out


class Official:
    """Handles on the official network class, sampler and training functions."""

    def __init__(self, repo: Path, cfg, reuse_prob: float = 1.0):
        repo = repo.resolve()
        for need in ("libs/models.py", "libs/nat_misc.py", "train.py", "utils.py", "timm"):
            if not (repo / need).exists():
                raise SystemExit(f"--official-repo {repo}: {need} missing; pass a checkout of github.com/LeapLabTHU/ENAT")
        try:
            import einops  # noqa: F401  (the official sampler and vendored timm import it)
        except ImportError:
            raise SystemExit("the official code needs einops: pip install einops") from None
        sys.path.insert(0, str(repo))  # its libs/ and its vendored timm/
        from libs.models import DiT
        from libs.nat_misc import NATSchedule

        self.DiT, self.NATSchedule = DiT, NATSchedule
        self.cfg = cfg
        self.args = types.SimpleNamespace(
            enc_dec=(cfg.enc_depth, cfg.dec_depth), seq_len=cfg.seq_len, reuse_prob=reuse_prob, ema_for_cond=1,
            mask_temp=1.5, samp_temp=6.0, cfg_scale=2.5)
        self.reuse_u = _FixedScalarDraws()
        ns = {"torch": self.reuse_u, "np": np, "args": self.args, "device": torch.device("cpu")}
        _functions_from_source(repo / "train.py", ("LSimple", "mask_by_confidence"), ns)
        self.LSimple = ns["LSimple"]
        utils = _functions_from_source(repo / "utils.py", ("ema", "get_grad_norm_"), {"nn": torch.nn, "torch": torch})
        self.ema, self.get_grad_norm_ = utils["ema"], utils["get_grad_norm_"]

    def network(self):
        c = self.cfg
        return self.DiT(input_size=c.grid, num_classes=c.num_classes, hidden_size=c.width, num_heads=c.heads,
                        mlp_ratio=c.mlp_ratio, class_dropout_prob=c.class_dropout_prob,
                        codebook_size=c.codebook_size, args=self.args)

    def schedule(self):
        return self.NATSchedule(codebook_size=self.cfg.codebook_size, device=torch.device("cpu"),
                                beta_alpha_beta=BETA_MEAN_08, args=self.args)

    def config_dict(self) -> dict:
        c = self.cfg
        return {"input_size": c.grid, "hidden_size": c.width, "num_heads": c.heads,
                "enc_dec": [c.enc_depth, c.dec_depth], "codebook_size": c.codebook_size,
                "num_classes": c.num_classes, "class_dropout_prob": c.class_dropout_prob, "mlp_ratio": c.mlp_ratio}


def perturbed_official_weights(official: Official, seed: int = 0, head_gain: float = 20.0) -> dict:
    """Official random init, every weight + N(0, 0.02^2) (adaLN starts at zero: identity blocks), and
    the head's last LayerNorm scaled by ``head_gain``: logits with a spread like a trained network's
    (std ~10 instead of ~0.5), so that the draws at the samplers' 1e-3 temperature floor are argmax
    draws on both sides and the id comparison does not hinge on near-ties of random weights."""
    torch.manual_seed(seed)
    net = official.network()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        net.mlm_layer.ln.weight.mul_(head_gain)
        net.mlm_layer.ln.bias.mul_(head_gain)
    return net.state_dict()


# -- sampling ----------------------------------------------------------------------------------------------
def official_generate(official: Official, net, labels, steps, cfg_scale, mask_temp, samp_temp):
    official.args.cfg_scale, official.args.mask_temp, official.args.samp_temp = cfg_scale, mask_temp, samp_temp
    sched = official.schedule()
    return sched.generate(steps, labels.shape[0], net, lambda z: z, official.cfg.grid, context=labels)


def bench_sampling(official: Official, sd: dict, rounds: int, batch: int) -> dict:
    cfg = official.cfg
    off = official.network()
    off.load_state_dict(sd)
    off.eval()
    ours = from_official(official.config_dict(), sd)
    labels = torch.arange(batch) * 7 % cfg.num_classes

    # identical ids under deterministic temperatures (argmax draws, no re-mask noise)
    det = dict(steps=8, cfg_scale=2.5, mask_temp=0.0, samp_temp=1e-6)
    ids_off = official_generate(official, off, labels, **det)
    ids_ours = generate(ours, labels, **det)
    same = ids_off.reshape(batch, -1) == ids_ours.reshape(batch, -1)
    identical = bool(same.all())

    kw = dict(steps=8, cfg_scale=2.5, mask_temp=1.5, samp_temp=6.0)
    np.random.seed(0)
    fns = {"official": lambda: official_generate(official, off, labels, **kw),
           "ours": lambda: generate(ours, labels, generator=torch.Generator().manual_seed(0), **kw)}
    for fn in fns.values():  # warm-up
        fn()
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]  # alternate who goes first
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append((time.perf_counter() - t) / batch)
            cpu[name].append((time.process_time() - c) / batch)
    return {"identical_ids": identical, "identical_fraction": same.float().mean().item(), "s_per_image": times,
            "ratios": [o / u for o, u in zip(times["official"], times["ours"])],
            "cpu_s_per_image": cpu, "cpu_ratios": [o / u for o, u in zip(cpu["official"], cpu["ours"])]}


# -- training ----------------------------------------------------------------------------------------------
class _Recorder(torch.nn.Module):
    """Wraps an official network and records each call's inputs (for the loss-equality replay)."""

    def __init__(self, net, log: list):
        super().__init__()
        self.net, self.log = net, log

    def forward(self, ids, context=None, prev_dict=None, return_dict=False):
        self.log.append({"ids": ids.clone(), "context": context.clone(), "prev_masking":
                         None if prev_dict is None else prev_dict["masking"].clone()})
        return self.net(ids, context=context, prev_dict=prev_dict, return_dict=return_dict)


def loss_equality(official: Official, sd: dict, batch: dict) -> dict:
    """|official LSimple loss - ours| on the same masks, with and without reuse (eval mode)."""
    off, off_ema = official.network(), official.network()
    off.load_state_dict(sd)
    off_ema.load_state_dict(sd)
    off.eval(), off_ema.eval()
    ours = from_official(official.config_dict(), sd)
    tokens, labels = batch["tokens"], batch["label"]
    out = {}
    for name, no_reuse in (("no_reuse", True), ("reuse", False)):
        log: list = []
        torch.manual_seed(7)
        with torch.no_grad():
            loss_off, _ = official.LSimple(tokens, _Recorder(off, log), official.schedule(),
                                           nnet_ema=_Recorder(off_ema, log), no_reuse=no_reuse, context=labels)
            prev = None
            if not no_reuse:  # first call: the EMA teacher on the superset mask
                teacher = log.pop(0)
                prev = ours(teacher["ids"], teacher["context"].reshape(-1))
            call = log.pop(0)
            masking = call["ids"] == official.cfg.mask_id
            logits = ours(call["ids"], call["context"].reshape(-1), prev=prev, logits_at="masked").logits
            loss_ours = masked_ce(logits, tokens, masking, 0.1)
        out[name] = {"official": float(loss_off), "ours": float(loss_ours),
                     "abs_diff": abs(float(loss_off) - float(loss_ours))}
    return out


class _FixedBatches(Dataset):
    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batch


def strata(n: int) -> list[float]:
    """U of the reuse draw k = round(U * #visible) for n timed steps: the midpoints of n equal
    strata of Uniform(0, 1), so the mean step time over them estimates the expected one."""
    return [(j + 0.5) / n for j in range(n)]


_OUR_REUSE_FRACTION = [0.5]


def _our_reuse_mask(masking, generator, shard=(0, 1)):
    return sample_reuse_mask(masking, generator, shard, fraction=_OUR_REUSE_FRACTION[0])


class _Interleaved(pl.Callback):
    """Times a whole mode inside one ``fit`` of our module, as a real run trains, with the official
    steps run from the hooks between our rounds (outside our timed windows).

    Our batches come in blocks of ``steps``: block 0 is an untimed warm-up, block r >= 1 is round
    r - 1. Batch i of a block runs at reuse fraction U = ``strata(steps)[i]``; the official side
    runs its round's ``steps`` steps at the same Us, before our block in even rounds and after it
    in odd ones. Per batch: (wall, process CPU) seconds of ``on_train_batch_start`` -> ``_end``.
    """

    def __init__(self, official: "OfficialTrainer", batch: dict, steps: int):
        self.official, self.batch, self.steps = official, batch, steps
        self.ours: list[list[tuple[float, float]]] = []  # per round, per batch
        self.theirs: list[list[tuple[float, float]]] = []

    def _official_round(self) -> None:
        self.theirs.append([self.official.step(self.batch, u) for u in strata(self.steps)])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        block, i = divmod(batch_idx, self.steps)
        if block >= 1 and i == 0:
            self.ours.append([])
            if (block - 1) % 2 == 0:
                self._official_round()
        _OUR_REUSE_FRACTION[0] = strata(self.steps)[i]
        self._t = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t = (time.perf_counter() - self._t[0], time.process_time() - self._t[1])
        block, i = divmod(batch_idx, self.steps)
        if block >= 1:
            self.ours[-1].append(t)
            if i == self.steps - 1 and (block - 1) % 2 == 1:
                self._official_round()


def interleaved_rounds(official: "OfficialTrainer", module: ENATModule, batch: dict, rounds: int, steps: int,
                       log_every_n_steps: int = 50) -> tuple[list, list]:
    """(ours, official): per round the per-step (wall, CPU) seconds, from one fit (``_Interleaved``)."""
    for u in strata(steps):  # the official warm-up (allocator, AdamW state, caches); ours is block 0
        official.step(batch, u)
    hooks = _Interleaved(official, batch, steps)
    n = (rounds + 1) * steps
    loader = DataLoader(_FixedBatches(batch, n), batch_size=None, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=n, logger=False, callbacks=[hooks],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, log_every_n_steps=log_every_n_steps)
    module_code.sample_reuse_mask = _our_reuse_mask  # our module draws its k at the stratum's U
    try:
        trainer.fit(module, train_dataloaders=loader)
    finally:
        module_code.sample_reuse_mask = sample_reuse_mask
    return hooks.ours, hooks.theirs


class OfficialTrainer:
    """The official train_step (its train.py): zero_grad, LSimple, backward, AdamW, LambdaLR, EMA, and
    the loss and gradient norm it logs every step (``metric_logger.update``; accelerate's gather of
    the loss is the identity in one process)."""

    def __init__(self, official: Official, sd: dict, no_reuse: bool):
        self.official, self.no_reuse = official, no_reuse
        self.nnet = official.network()
        self.nnet.load_state_dict(sd)
        self.nnet.train()
        self.nnet_ema = copy.deepcopy(self.nnet).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.nnet.parameters(), lr=4e-4, weight_decay=0.03, betas=(0.99, 0.99))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: min(step / 5000, 1))
        self.schedule = official.schedule()
        self.step_no = 0

    def step(self, batch: dict, fraction: float = 0.5) -> tuple[float, float]:
        self.official.reuse_u.value = fraction
        t, c = time.perf_counter(), time.process_time()
        self.opt.zero_grad()
        loss, _ = self.official.LSimple(batch["tokens"], self.nnet, self.schedule, nnet_ema=self.nnet_ema,
                                        no_reuse=self.no_reuse, context=batch["label"])
        self.logged = {"loss": loss.detach().mean()}
        loss.mean().backward()
        self.opt.step()
        self.sched.step(self.step_no)
        self.official.ema(self.nnet_ema, self.nnet, 0.9999)
        self.logged["grad_norm"] = self.official.get_grad_norm_(self.opt.param_groups[0]["params"])
        self.step_no += 1
        return time.perf_counter() - t, time.process_time() - c


def bench_training_mode(official: Official, sd: dict, batch: dict, rounds: int, steps: int, mode: str,
                        log_every_n_steps: int = 50) -> dict:
    """One mode ("no_reuse" / "reuse"), ``interleaved_rounds``: per round each side's step time.
    No reuse: the steps are alike, their median. Reuse: step i at U = strata(steps)[i] on both sides
    (the same k), their mean, i.e. the expected step time over U ~ Uniform(0, 1)."""
    reuse_prob = {"no_reuse": 0.0, "reuse": 1.0}[mode]
    off = OfficialTrainer(official, sd, no_reuse=reuse_prob == 0.0)
    module = ENATModule(official.cfg, reuse_prob=reuse_prob, mask_ratio_beta=BETA_MEAN_08, warmup_steps=5000)
    converted = from_official(official.config_dict(), sd).state_dict()
    module.net.load_state_dict(converted)
    getattr(module.ema, "module", module.ema).load_state_dict(converted)  # AveragedModel wraps the copy
    ours, theirs = interleaved_rounds(off, module, batch, rounds, steps, log_every_n_steps)
    average = statistics.median if mode == "no_reuse" else statistics.mean
    res = {}
    for side, runs in (("official", theirs), ("ours", ours)):
        res[side] = [average(w for w, _ in r) for r in runs]
        res[side + "_cpu"] = [average(c for _, c in r) for r in runs]
    return with_ratios(res)


SIDES = ("official", "ours", "official_cpu", "ours_cpu")


def with_ratios(res: dict) -> dict:
    res["ratios"] = [o / u for o, u in zip(res["official"], res["ours"])]
    res["cpu_ratios"] = [o / u for o, u in zip(res["official_cpu"], res["ours_cpu"])]
    return res


def mix(no_reuse: dict, reuse: dict) -> dict:
    """The 50/50 mix, round by round: the mean of the two modes' step times."""
    return with_ratios({side: [(a + b) / 2 for a, b in zip(no_reuse[side], reuse[side])] for side in SIDES})


def mode_in_fresh_process(args: argparse.Namespace, mode: str) -> dict:
    """``bench_training_mode`` in a new Python process. A process slows down over a long run (memory
    it has cycled through is slower to touch again on this VM), so a mode timed after the other in
    the same process would pay for it; in separate processes both modes start alike."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{mode}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--official-repo", str(args.official_repo),
               "--threads", str(args.threads), "--rounds", str(args.rounds), "--train-steps", str(args.train_steps),
               "--train-batch", str(args.train_batch), "--log-every-n-steps", str(args.log_every_n_steps),
               "--mode", mode, "--json", str(out)]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


# -- report ------------------------------------------------------------------------------------------------
def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-repo", type=Path, required=True, help="a checkout of github.com/LeapLabTHU/ENAT")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved official/ours rounds")
    ap.add_argument("--train-steps", type=int, default=5, help="timed optimizer steps per side, mode and round")
    ap.add_argument("--sample-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--skip", choices=("sampling", "training"), default=None)
    ap.add_argument("--log-every-n-steps", type=int, default=50,
                    help="our Trainer's logging interval (experiments/enat_s.yaml: 50; 1 = log every step as the "
                         "official train_step does)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--mode", choices=("no_reuse", "reuse"), help=argparse.SUPPRESS)  # internal: one training mode
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import warnings
    warnings.filterwarnings("ignore")

    cfg = preset("enat-s")
    official = Official(args.official_repo, cfg)
    sd = perturbed_official_weights(official)
    g = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(0, cfg.codebook_size, (args.train_batch, cfg.seq_len), generator=g),
             "label": torch.randint(0, cfg.num_classes, (args.train_batch,), generator=g)}
    if args.mode is not None:  # a child of mode_in_fresh_process
        write_json(args.json, bench_training_mode(official, sd, batch, args.rounds, args.train_steps, args.mode,
                                                  args.log_every_n_steps))
        return
    results = {"machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
               "peak_gflops_before": matmul_peak_gflops()}
    print(f"ENAT-S (official DiT enc_dec={cfg.enc_depth},{cfg.dec_depth}, width {cfg.width}), fp32, "
          f"{args.threads} threads, torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"fp32 matmul peak (2048^3): {results['peak_gflops_before']:.1f} GFLOP/s at start")

    if args.skip != "sampling":
        s = bench_sampling(official, sd, args.rounds, args.sample_batch)
        results["sampling"] = s
        print(f"\nsampling, batch {args.sample_batch}, 8 steps, cfg 2.5: identical ids (deterministic temps): "
              f"{s['identical_ids']} ({100 * s['identical_fraction']:.2f}% of tokens)")
        for side in ("official", "ours"):
            print(f"  {side:>8} s/image: {summary(s['s_per_image'][side])}")
        print(f"  ratio official/ours: {summary(s['ratios'])}   per round: "
              + " ".join(f"{x:.2f}" for x in s["ratios"]))
        print(f"  ratio of process CPU time: {summary(s['cpu_ratios'])}")

    if args.skip != "training":
        eq = loss_equality(official, sd, batch)
        results["loss_equality"] = eq
        print(f"\ntraining step, batch {args.train_batch}, mask ratio 0.8, fp32, ours logging every "
              f"{args.log_every_n_steps} steps")
        for k, v in eq.items():
            print(f"  loss {k}: official {v['official']:.6f} ours {v['ours']:.6f} |diff| {v['abs_diff']:.1e}")
        t = {mode: mode_in_fresh_process(args, mode) for mode in ("no_reuse", "reuse")}
        t["mix"] = mix(t["no_reuse"], t["reuse"])
        results["training"] = t
        for k in ("no_reuse", "reuse", "mix"):
            print(f"  {k:>8}: official s/step {summary(t[k]['official'])}")
            print(f"  {'':>8}  ours     s/step {summary(t[k]['ours'])}")
            print(f"  {'':>8}  ratio {summary(t[k]['ratios'])}   per round: "
                  + " ".join(f"{x:.2f}" for x in t[k]["ratios"]))
            print(f"  {'':>8}  ratio of process CPU time {summary(t[k]['cpu_ratios'])}")

    results["peak_gflops_after"] = matmul_peak_gflops()
    print(f"\nfp32 matmul peak at end: {results['peak_gflops_after']:.1f} GFLOP/s")
    if args.json:
        write_json(args.json, results)


def write_json(path: Path, results: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
