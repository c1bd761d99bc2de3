"""`enat flops`: GMACs of one generation in the paper's convention (per step and total)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from enat_lightning.sampling.settings import SamplerSettings


def flops(experiment: Optional[list[Path]] = None, preset: Optional[str] = None, ckpt: Optional[Path] = None,
          resolution: Optional[int] = None, guidance_pass: bool = True, vq: str = "maskgit-f16",
          json: bool = False, force_reuse: bool = False, trust_checkpoint: bool = False, import_code: bool = False,
          sampler: SamplerSettings = SamplerSettings()) -> dict:
    """Count the GMACs of one generation (paper convention: MACs, cond+uncond, all steps).

    Args:
        experiment: training config(s) as for `enat fit` (also `-c CONFIG.yaml`; repeat to compose): reads model.net
        preset: a model preset (paper Table 7), e.g. enat-s, enat-l, nat-baseline
        ckpt: a checkpoint whose hyper-parameters hold the model config
        resolution: image side in pixels with --preset (latent grid = side/16; default: the preset's 256)
        guidance_pass: count the unconditional (guidance) pass too; false: the conditional pass only
        vq: VQ decoder `tflops_paper` adds: a VQGAN preset, llamagen-vq-16 / llamagen-vq-8, or 'none' to drop
        json: print one JSON object instead of a table
        force_reuse: count reuse even for an ENAT trained without it (model.reuse_prob 0, Table 6a row 2); a NAT never reuses
        trust_checkpoint: load a --ckpt holding pickled Python objects (can run code; only files you trust)
        import_code: import the modules a -c config's class_path names outside enat_lightning (runs their code)
        sampler: sampler settings (steps, schedule, reuse: reuse is used only by networks trained to reuse)
    """
    import dataclasses
    import json as json_lib

    from enat_lightning.commands.common import network_config, sampler_for
    from enat_lightning.evaluation.flops import count_generation

    cfg, can_reuse = network_config(preset=preset, experiment=experiment, ckpt=ckpt, resolution=resolution,
                                    trust_checkpoint=trust_checkpoint, import_code=import_code,
                                    command="enat flops")
    s = sampler_for(sampler, can_reuse or (force_reuse and cfg.supports_reuse))
    if not guidance_pass:
        s = dataclasses.replace(s, cfg_scale=0.0)  # no unconditional pass is counted
    rep = count_generation(cfg, s, vq=None if vq == "none" else vq)
    if json:
        print(json_lib.dumps(rep.to_dict(), indent=2))
        return rep.to_dict()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{type(cfg).__name__} {cfg.grid}x{cfg.grid} tokens, {s.steps} steps, "
                        f"reuse {'on' if s.reuse else 'off'} (GMACs per image)")
    for col in ("step", "masked in", "newly visible", "reuse", "cond G", "uncond G", "ours G"):
        table.add_column(col, justify="right")
    for st in rep.per_step:
        table.add_row(str(st.step), str(st.masked), str(st.new), "yes" if st.reused else "no",
                      f"{st.cond_gmacs:.2f}", f"{st.uncond_gmacs:.2f}", f"{st.actual_gmacs:.2f}")
    Console().print(table)
    print(f"gmacs_total      {rep.gmacs_total:8.2f}  (official network, decoder excluded: paper Tables 1/2/6)")
    print(f"gmacs_actual     {rep.gmacs_actual:8.2f}  (what our sampler runs)")
    if rep.gmacs_condition:
        print(f"gmacs_condition  {rep.gmacs_condition:8.2f}  (in both totals: captions projected once per sample)")
    print(f"gmacs_vq_decoder {rep.gmacs_vq_decoder:8.2f}  (one decoder call, {vq})")
    print(f"tflops_paper     {rep.tflops_paper:8.3f}  (incl. decoder: paper Table 3/4 'TFLOPs')")
    print("Convention: multiply-accumulates per image, all steps, cond + uncond passes.")
    return rep.to_dict()
