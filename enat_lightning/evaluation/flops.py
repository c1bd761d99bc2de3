"""FLOP counting of a whole generation in the paper's convention (paper Tables 1-4 and 6).

Convention (what the paper's numbers are, reproduced by this module):
  * multiply-accumulates (MACs): ``torch.utils.flop_counter`` counts 2 FLOPs per MAC -> divide by 2;
  * summed over every sampling step, conditional **and** unconditional (CFG) passes, one image;
  * ablation tables (1, 2, 6) exclude the VQ decoder; system tables (3, 4) include it and print
    "TFLOPs" that are really tera-MACs.

How: the network is built on the ``meta`` device (no memory, no arithmetic) and driven by the
*real* sampler (``sampling.generate``) as a ``sampling.Stepper`` of its own. The sampler's data-dependent work (Gumbel
draws, argsort re-masking) runs on tiny real CPU tensors: the stepper hands it random logits, while
ids, labels and masks stay real CPU tensors, so the meta network sees the exact visible / masked /
newly-revealed counts of every step, with reuse states threaded exactly as in sampling.

Everything the sampler does comes from one ``SamplerSettings``: the counts follow its schedule,
order and guidance, so skipped unconditional passes (``uncond_skip_steps``, steps with guidance
weight 0) cost nothing here either.

Two totals:
  gmacs_total   the official network's work: logits at all L positions and, when guided, an
                unconditional pass at step 0 (the official sampler runs it although w = 0) and at
                every step with a non-zero weight that is not in ``uncond_skip_steps``;
  gmacs_actual  what our sampler executes: logits only at masked positions, only the
                unconditional passes it runs (none at step 0 where its result is unused), and
                each block's adaLN modulation once per sample (the condition caches it).
Both include ``gmacs_condition``, the once-per-sample work of ``prepare_condition`` /
``null_condition`` (0 for class labels, a table lookup; for text models the caption projection
and every block's caption keys/values, for the caption and, guided, the empty caption).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from enat_lightning.models import ModelConfig, build_model
from enat_lightning.models.conditioning import Condition
from enat_lightning.models.tokens import ENATOutput
from enat_lightning.sampling.settings import SamplerSettings
from enat_lightning.sampling.stepper import NetworkStepper

# Which network a "TFLOPs incl. decoder" number adds: the MaskGIT VQGAN (vq-f16-jax.yaml).
DEFAULT_VQ = "maskgit-f16"


@dataclass
class StepFlops:
    step: int
    masked: int  # masked tokens in this step's input
    new: int  # tokens revealed by the previous step (what a reuse step encodes)
    reused: bool  # a reuse state was passed to the network
    cond_gmacs: float  # official convention (logits at all positions)
    uncond_gmacs: float
    actual_gmacs: float  # what our sampler ran at this step (cond + uncond rows)
    uncond_ran: bool = False  # the sampler ran the unconditional rows at this step


@dataclass
class FlopReport:
    config: dict
    steps: int
    reuse: bool
    schedule: str
    gmacs_total: float
    gmacs_actual: float
    gmacs_vq_decoder: float
    per_step: list[StepFlops] = field(default_factory=list)
    gmacs_condition: float = 0.0  # once per sample, included in both totals (module docstring)
    sampler: dict = field(default_factory=dict)
    convention: str = ("multiply-accumulates (FlopCounterMode FLOPs / 2), one image, summed over all steps, "
                       "conditional + unconditional passes; gmacs_total = official network (logits at all "
                       "positions, uncond pass at every step); tflops_paper = (gmacs_total + decoder) / 1000")

    @property
    def tflops_paper(self) -> float:
        """Paper Table 3/4 unit: tera-MACs per image, VQ decoder included."""
        return (self.gmacs_total + self.gmacs_vq_decoder) / 1000.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tflops_paper"] = self.tflops_paper
        return d


def _macs(flops: int) -> float:
    return flops / 2 / 1e9  # FlopCounterMode: 2 FLOPs per multiply-accumulate -> GMACs


class _CountingStepper:
    """A ``sampling.Stepper`` over the meta network: counts its work per call and hands the real
    sampler random CPU logits (ids, masks and reuse states stay real CPU tensors)."""

    device = torch.device("cpu")

    def __init__(self, net: nn.Module, seed: int = 0):
        self.net, self.cfg = net, net.cfg
        self.grid, self.seq_len, self.mask_id = net.cfg.grid, net.cfg.seq_len, net.cfg.mask_id
        self.empty_state_when_all_masked = NetworkStepper(net).empty_state_when_all_masked
        self._gen = torch.Generator().manual_seed(seed)
        self.calls: list[dict] = []
        self.condition_flops = 0  # prepare_condition + null_condition, per sample

    def conditions(self, raw, guided: bool):
        with FlopCounterMode(display=False) as fc:
            condition = self.net.prepare_condition(raw).caching_modulation()
            null = self.net.null_condition(condition) if guided else None
        self.condition_flops += fc.get_total_flops()
        both = Condition.cat([condition, null]).caching_modulation() if guided else None
        return condition, both

    def sampling(self):
        return contextlib.nullcontext()

    def __call__(self, ids: torch.Tensor, labels, prev: ENATOutput | None, logits_at: str,
                 num_masked: int | None = None) -> ENATOutput:
        net = self.net
        net = self.net
        masking = ids == self.cfg.mask_id  # (R, L) real CPU
        rows, L = ids.shape
        n_masked = int(masking[0].sum())
        extra = {}
        if getattr(self.cfg, "attention_removal", "none") != "none":
            # Fig. 2 variants mask dense attention: the same MACs as full attention, and the mask
            # (a real CPU tensor) cannot meet meta activations inside the attention kernel.
            extra["attention_removal"] = "none"
        with FlopCounterMode(display=False) as fc:
            out = net(ids, labels, prev=prev, logits_at=logits_at, **extra)
        actual = fc.get_total_flops()
        # The official network computes every block's adaLN modulation at every step; our sampler
        # caches it in the condition after the first (Condition.caching_modulation): count a pass
        # without the cache.
        official = actual
        if isinstance(labels, Condition) and labels.modulation_cache is not None:
            with FlopCounterMode(display=False) as fo:
                net(ids, dataclasses.replace(labels, modulation_cache=None), prev=prev, logits_at=logits_at, **extra)
            official = fo.get_total_flops()
        # The official network runs the output head at every position: add the head over the
        # visible positions our masked-only path skipped (the head is per-position, so this is exact).
        if logits_at == "masked" and L > n_masked:
            with FlopCounterMode(display=False) as fh:
                net.head(torch.empty(rows, L - n_masked, net.cfg.width, device="meta"),
                         net.embed.word_embeddings.weight)
            official += fh.get_total_flops()
        new = 0
        if prev is not None:
            new = int((prev.masking[0] & ~masking[0]).sum())
        self.calls.append(dict(rows=rows, masked=n_masked, reused=prev is not None, new=new,
                               actual=actual, official_per_row=official / rows))
        logits = torch.randn(tuple(out.logits.shape), generator=self._gen)  # drives the real sampler
        return ENATOutput(logits, out.feat, masking, out.layer_feats)


def build_meta(cfg: ModelConfig) -> nn.Module:
    """The network on the meta device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        return build_model(cfg)


def _llamagen_decoder_gmacs(grid: int, preset: str) -> float:
    from enat_lightning.tokenizers.llamagen import PRESETS, LlamaGenVQ

    if preset not in PRESETS:
        raise ValueError(f"unknown LlamaGen VQ preset 'llamagen-{preset}'; choose from "
                         f"{sorted('llamagen-' + p for p in PRESETS)}")
    with torch.device("meta"):
        model = LlamaGenVQ(PRESETS[preset])
    with FlopCounterMode(display=False) as fc:
        model.decode_latent(torch.empty(1, PRESETS[preset].codebook_embed_dim, grid, grid, device="meta"))
    return _macs(fc.get_total_flops())


def vq_decoder_gmacs(grid: int, vq: str | dict | None = DEFAULT_VQ) -> float:
    """GMACs of one VQ-decoder call for a grid x grid token map (the MaskGIT VQGAN by default).

    ``vq``: a ``tokenizers.VQGAN_PRESETS`` name, a VQGANConfig dict, or ``llamagen-vq-16`` / ``llamagen-vq-8``
    (LlamaGen's decoder with its post_quant_conv); None -> 0 (no decoder).
    """
    if vq is None:
        return 0.0
    if isinstance(vq, str) and vq.startswith("llamagen-"):
        return _llamagen_decoder_gmacs(grid, vq.removeprefix("llamagen-"))
    from enat_lightning.tokenizers.vqgan import PRESETS, Decoder, VQGANConfig

    if isinstance(vq, str):
        if vq not in PRESETS:
            raise ValueError(f"unknown VQGAN preset {vq!r}; choose from {sorted(PRESETS)}")
        vcfg = PRESETS[vq]
    else:
        vcfg = VQGANConfig.from_dict(vq)
    with torch.device("meta"):
        dec = Decoder(vcfg)
    with FlopCounterMode(display=False) as fc:
        dec(torch.empty(1, vcfg.z_channels, grid, grid, device="meta"))
    return _macs(fc.get_total_flops())


def count_generation(cfg: ModelConfig, settings: SamplerSettings | None = None, *,
                     vq: str | dict | None = DEFAULT_VQ, seed: int = 0) -> FlopReport:
    """GMACs to generate one image with ``cfg`` under ``settings`` (see the module docstring).

    ``settings``: the sampler (``SamplerSettings()`` = the official one); ``cfg_scale: 0`` counts
    no unconditional pass; a NAT ignores ``reuse``. ``vq``: decoder added to ``tflops_paper``.
    """
    from enat_lightning.sampling import generate

    settings = SamplerSettings() if settings is None else settings
    steps = settings.steps
    net = build_meta(cfg)
    stepper = _CountingStepper(net, seed=seed)
    # One image with a full-length condition (label 0 / a caption of T real tokens; the cost does
    # not depend on the values), driven through the real sampler loop with these settings.
    generate(stepper, net.example_condition(1), settings, generator=torch.Generator().manual_seed(seed))
    if len(stepper.calls) != steps:
        raise RuntimeError(f"expected one network call per step ({steps}), the sampler made {len(stepper.calls)}")
    weights, guided = settings.weights(), settings.guided
    per_step = []
    for s, c in enumerate(stepper.calls):
        one = _macs(c["official_per_row"])  # one image, one pass (every row has the same shapes)
        official_uncond = guided and s not in settings.uncond_skip_steps and (s == 0 or weights[s] != 0)
        per_step.append(StepFlops(step=s, masked=c["masked"], new=c["new"], reused=c["reused"],
                                  cond_gmacs=one, uncond_gmacs=one if official_uncond else 0.0,
                                  actual_gmacs=_macs(c["actual"]), uncond_ran=c["rows"] == 2))
    condition = _macs(stepper.condition_flops)
    return FlopReport(config=cfg.to_dict(), steps=steps, reuse=settings.reuse, schedule=str(settings.schedule),
                      gmacs_total=condition + sum(p.cond_gmacs + p.uncond_gmacs for p in per_step),
                      gmacs_actual=condition + sum(p.actual_gmacs for p in per_step),
                      gmacs_vq_decoder=vq_decoder_gmacs(cfg.grid, vq), per_step=per_step, gmacs_condition=condition,
                      sampler=settings.to_dict())
