"""Interaction analyses: feature similarity across steps (Fig. 5), attention maps and cuts (Fig. 2)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

from enat_lightning.sampling.settings import SamplerSettings


def _claim(out: Path, analysis: str, overwrite: bool):
    """The output rule (fileio.claim_output) for an analysis folder: a non-empty --out this analysis did not make is
    refused unless --overwrite; a second concurrent writer is refused; a rerun writes again."""
    from enat_lightning.fileio import claim_output

    return claim_output(out, overwrite=overwrite, folder=True, made_by={"command": f"enat analyze {analysis}"})


@contextmanager
def _tensorboard(tensorboard: Optional[Path]):
    """A SummaryWriter on --tensorboard (closed afterwards), or None."""
    if tensorboard is None:
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tensorboard))
    try:
        yield writer
    finally:
        writer.close()


def _captions(prompts: Optional[Path], text_encoder: Optional[str]):
    """--prompts through --text_encoder -> Captions (text models), else None."""
    if prompts is None:
        return None
    from enat_lightning.commands.common import prompt_encoder
    from enat_lightning.text import encode_prompts, read_prompts

    return encode_prompts(read_prompts(prompts), prompt_encoder(text_encoder))


def similarity(ckpt: Path, out: Path, num_samples: int = 16, labels: Optional[list[int]] = None,
               prompts: Optional[Path] = None, text_encoder: Optional[str] = None, layer: Literal["final", "all"] = "final", show_samples: int = 2, seed: int = 0, batch_size: int = 32,
               device: str = "cpu", tensorboard: Optional[Path] = None, trust_checkpoint: bool = False,
               overwrite: bool = False, sampler: SamplerSettings = SamplerSettings()) -> dict:
    """Token-wise cosine similarity of adjacent steps' features (paper Fig. 5).

    Args:
        ckpt: checkpoint from `enat fit` or `enat import-official` (its EMA weights; the raw weights, with a note saying so, when it has no EMA copy)
        out: output folder
        num_samples: samples to generate (classes cycled)
        labels: class ids to cycle through, e.g. 1,2,3 (default: all classes)
        prompts: text models: a file with one caption per line, cycled (needs --text_encoder)
        text_encoder: with --prompts: the encoder of the training shards, 'clip:DIR' or 'hash[:dim=..,length=..]'
        layer: final features only, or every block's output too
        show_samples: samples drawn in the similarity-map figure
        seed: sampling seed
        batch_size: samples per sampler call (bounds memory)
        device: cpu, cuda, cuda:1 ...
        tensorboard: also log figures and scalars to this TensorBoard log dir
        trust_checkpoint: load a checkpoint holding pickled Python objects (can run code; only files you trust)
        overwrite: write into an existing non-empty --out that this analysis did not make
        sampler: sampler settings
    """
    from enat_lightning.analysis.similarity import GROUPS, analyze_similarity
    from enat_lightning.commands.common import check_device

    check_device(device)
    with _claim(out, "similarity", overwrite), _tensorboard(tensorboard) as writer:
        res, paths = analyze_similarity(ckpt, out, sampler, num_samples=num_samples, labels=labels,
                                        layers=layer, show_samples=show_samples, seed=seed, device=device,
                                        batch_size=batch_size, logger=writer, trust=trust_checkpoint,
                                        captions=_captions(prompts, text_encoder))
    final = res.layers.index("final")
    print("mean similarity of adjacent steps (final features):")
    print("pair    " + "  ".join(f"{g:>18}" for g in GROUPS))
    for p in range(res.num_pairs):
        print(f"{p + 1}->{p + 2:<4}" + "  ".join(f"{float(res.means[final, p, g]):18.4f}" for g in range(3)))
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return {k: str(v) for k, v in paths.items()}


def attention_maps(ckpt: Path, out: Path, num_samples: int = 16, labels: Optional[list[int]] = None,
                   prompts: Optional[Path] = None, text_encoder: Optional[str] = None, seed: int = 0,
                   batch_size: int = 32, device: str = "cpu", tensorboard: Optional[Path] = None,
                   trust_checkpoint: bool = False, overwrite: bool = False,
                   sampler: SamplerSettings = SamplerSettings()) -> dict:
    """Attention mass of [MASK] queries on visible vs [MASK] keys per block and step.

    Args:
        ckpt: checkpoint from `enat fit` or `enat import-official` (its EMA weights; the raw weights, with a note saying so, when it has no EMA copy)
        out: output folder
        num_samples: samples to generate (classes cycled)
        labels: class ids to cycle through, e.g. 1,2,3 (default: all classes)
        prompts: text models: a file with one caption per line, cycled (needs --text_encoder)
        text_encoder: with --prompts: the encoder of the training shards, 'clip:DIR' or 'hash[:dim=..,length=..]'
        seed: sampling seed
        batch_size: samples per sampler call (bounds memory)
        device: cpu, cuda, cuda:1 ...
        tensorboard: also log figures and scalars to this TensorBoard log dir
        trust_checkpoint: load a checkpoint holding pickled Python objects (can run code; only files you trust)
        overwrite: write into an existing non-empty --out that this analysis did not make
        sampler: sampler settings
    """
    from enat_lightning.analysis.attention_maps import analyze_attention_maps
    from enat_lightning.commands.common import check_device

    check_device(device)
    with _claim(out, "attention-maps", overwrite), _tensorboard(tensorboard) as writer:
        res, paths = analyze_attention_maps(ckpt, out, sampler, num_samples=num_samples, labels=labels,
                                            seed=seed, device=device, batch_size=batch_size, logger=writer,
                                            trust=trust_checkpoint, captions=_captions(prompts, text_encoder))
    mv = res.masses["mask_to_visible"]
    print("[MASK] -> visible attention mass (blocks x steps):")
    for li, layer in enumerate(res.layers):
        print(f"{layer:>8} " + " ".join("   -  " if v != v else f"{v:6.3f}" for v in mv[li].tolist()))
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return {k: str(v) for k, v in paths.items()}


def attention(ckpt: Path, out: Path, remove: str = "all", data: Optional[str] = None, limit: Optional[int] = None,
              batch_size: int = 64, mask_ratio_beta: tuple[float, float] = (12.0, 3.0),
              metric: Literal["none", "demo-fid", "fid"] = "none", num_samples: int = 500,
              fid_stats: Optional[Path] = None, tokenizer: Optional[str] = None, inception: Optional[Path] = None,
              seed: int = 0, device: str = "cpu", trust_checkpoint: bool = False, overwrite: bool = False,
              sampler: SamplerSettings = SamplerSettings()) -> list[dict]:
    """A trained NAT with one attention interaction cut at inference time (Fig. 2): masked-token loss change
    and sample quality.

    Args:
        ckpt: NAT checkpoint (arch 'nat')
        out: output folder (attention_removal.csv / .md)
        remove: all | comma-separated of mask_to_visible, visible_to_mask, visible_to_visible, mask_to_mask
        data: validation token shards (default: the demo val split when the model fits it)
        limit: use only the first N validation samples
        batch_size: validation samples per forward pass
        mask_ratio_beta: Beta(a, b) of the validation mask ratio (training recipe default 12 3)
        metric: also sample each cut variant and score it (demo-fid: demo classifier; fid: Inception, needs --fid_stats, --tokenizer and --inception)
        num_samples: samples per variant for --metric
        fid_stats: reference statistics .npz (`enat fid-stats`), for --metric fid
        tokenizer: tokenizer spec for --metric fid (VQGAN checkpoint or JSON spec)
        inception: Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth), for --metric fid
        seed: sampling / mask seed
        device: cpu, cuda, cuda:1 ...
        trust_checkpoint: load a checkpoint holding pickled Python objects (can run code; only files you trust)
        overwrite: write into an existing non-empty --out that this analysis did not make
        sampler: sampler settings for --metric
    """
    from enat_lightning.analysis.attention_removal import analyze_attention_removal, removal_list
    from enat_lightning.analysis.report import markdown_table
    from enat_lightning.commands.common import check_device

    check_device(device)
    removals = removal_list(remove)
    sample_metric = None
    if metric != "none":
        from enat_lightning.studies.study import sample_quality_metric

        sample_metric = sample_quality_metric(metric, sampler, num_samples=num_samples, seed=seed,
                                              fid_stats=str(fid_stats) if fid_stats else None, tokenizer=tokenizer,
                                              feature=str(inception) if inception else None, device=device)
    with _claim(out, "attention", overwrite):
        rows = analyze_attention_removal(ckpt, out, removals=removals, data=data, limit=limit, batch_size=batch_size,
                                         seed=seed, mask_ratio_beta=tuple(mask_ratio_beta),
                                         sample_metric=sample_metric, device=device, trust=trust_checkpoint)
    print(markdown_table(rows), end="")
    print(f"wrote {out}/attention_removal.csv and attention_removal.md")
    return rows
