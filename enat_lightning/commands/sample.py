"""`enat sample`: class-conditional (or captioned) samples -> grid.png, samples.npz (ADM layout), optional PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from enat_lightning.sampling.settings import SamplerSettings


def load_network(ckpt: Optional[Path], preset: Optional[str], experiment: Optional[list[Path]],
                 official_weights: Optional[Path], num_classes: int, resolution: int, trust_checkpoint: bool):
    """(model, model identity for the sample manifest) from a checkpoint, or a preset / training config
    plus official weights."""
    from enat_lightning.commands.common import network_config
    from enat_lightning.errors import UserError

    if ckpt is not None:
        if preset or experiment or official_weights:
            raise UserError("give either --ckpt, or --preset / -c CONFIG.yaml with --official_weights")
        from enat_lightning.sampling.checkpoint import load_generator

        model, _ = load_generator(ckpt, trust=trust_checkpoint)
        return model, {"ckpt": str(Path(ckpt).resolve())}
    if not (preset or experiment):
        raise UserError("give either --ckpt or --preset / -c CONFIG.yaml (with --official_weights)")
    if official_weights is None:
        raise UserError("--preset / -c need --official_weights (a randomly initialised model samples noise)")
    from enat_lightning.models import build_model, load_official_weights
    from enat_lightning.sampling.checkpoint import read_torch_file

    cfg, _ = network_config(preset=preset, experiment=experiment, resolution=resolution,
                            num_classes=num_classes if preset else None)
    sd = read_torch_file(official_weights, what="official weights", trust=trust_checkpoint,
                         make_hint="download nnet_ema.pth of the official ENAT release")
    model = load_official_weights(build_model(cfg), sd, source=str(official_weights)).eval()
    return model, {"config": preset or [str(e) for e in experiment],
                   "official_weights": str(Path(official_weights).resolve())}


def sample(out: Path, ckpt: Optional[Path] = None, preset: Optional[str] = None,
           experiment: Optional[list[Path]] = None, official_weights: Optional[Path] = None,
           num_classes: int = 1000, resolution: int = 256, labels: Optional[list[int]] = None,
           per_class: Optional[int] = None, prompts: Optional[Path] = None, text_encoder: Optional[str] = None,
           tokenizer: Optional[str] = None, save_images: bool = False, device: Optional[str] = None,
           progress: bool = True, seed: int = 0, batch_size: int = 32, overwrite: bool = False,
           trust_checkpoint: bool = False, sampler: SamplerSettings = SamplerSettings()) -> dict:
    """Generate images with a trained or imported ENAT/NAT (resumable, data-parallel over GPUs).

    Args:
        out: output folder (rerun with the same arguments to resume)
        ckpt: checkpoint from `enat fit` or `enat import-official` (EMA weights are used)
        preset: with --official_weights: an architecture preset (`enat models`)
        experiment: with --official_weights: training config(s) naming the network (also `-c CONFIG.yaml`)
        official_weights: official nnet_ema.pth to load into --preset / -c
        num_classes: with --preset
        resolution: with --preset: image side in pixels (latent grid = side/16)
        labels: class ids, e.g. 1,2,3
        per_class: N samples of each --labels class (of every class without --labels), or of each --prompts line
        prompts: text models: a file with one caption per line (needs --text_encoder)
        text_encoder: with --prompts: the encoder of the training shards, 'clip:DIR' or 'hash[:dim=..,length=..]'
        tokenizer: 'demo', 'demo:PATH', a VQGAN checkpoint or a JSON tokenizer spec; without it only token ids are saved
        save_images: also write one PNG per sample
        device: cpu, cuda, cuda:1 ... (default: all GPUs, else the CPU)
        progress: show a progress bar
        seed: sampling seed (sample i draws from its own generator seeded by (seed, i): independent of batch size and GPU count)
        batch_size: samples per sampler call (bounds memory)
        overwrite: replace outputs of an earlier run with other settings
        trust_checkpoint: load checkpoints holding pickled Python objects (can run code; only files you trust)
        sampler: sampler settings (defaults: the official ImageNet-256 setting)
    """
    import torch

    from enat_lightning.commands.common import check_device, check_output_dir
    from enat_lightning.data.tokenize import resolve_tokenizer
    from enat_lightning.errors import UserError
    from enat_lightning.prediction import sample_to_dir
    from enat_lightning.sampling.runner import SampleRun, class_labels

    check_device(device)
    check_output_dir(out)
    model, model_id = load_network(ckpt, preset, experiment, official_weights, num_classes, resolution,
                                   trust_checkpoint)
    conditions, extra = None, None
    if prompts is not None:  # text model: sample i is conditioned on its prompt; labels = prompt line indices
        from enat_lightning.text import build_text_encoder, encode_prompts, prompts_sha1, read_prompts

        if not text_encoder:
            raise UserError("--prompts needs --text_encoder (the encoder the training shards were made with)")
        if not text_encoder.startswith("hash"):  # a CLIP text model: the [t2i] extra
            from enat_lightning.commands.common import require_extra

            require_extra("transformers>=4.40")
        lines = read_prompts(prompts)
        wanted = [i for i in range(len(lines)) for _ in range(per_class or 1)]
        conditions = encode_prompts(lines, build_text_encoder(text_encoder), model.cfg)[torch.tensor(wanted)]
        model_id = {**model_id, "prompts_sha1": prompts_sha1(lines), "text_encoder": text_encoder}
        extra = {"prompts.txt": ("\n".join(lines) + "\n").encode()}  # labels in samples.npz index its lines
    elif model.cfg.condition == "text":
        raise UserError("this is a text model: give --prompts FILE (one caption per line) and --text_encoder")
    else:
        wanted = class_labels(model.cfg.num_classes, labels, per_class)
    tok = resolve_tokenizer(tokenizer) if tokenizer is not None else None
    r = sample_to_dir(model, wanted, out, sampler, tok, run=SampleRun(seed, batch_size), save_images=save_images,
                      overwrite=overwrite, device=device, model_id=model_id, progress=progress, extra_files=extra,
                      conditions=conditions)
    if "samples_npz" not in r:  # a rank > 0 of a multi-GPU run: rank 0 reports
        return r
    print(f"{r['num_samples']} samples on {', '.join(r['devices'])} ({r['resumed']} chunks resumed) -> "
          f"{r['samples_npz']}")
    if r["decoded"]:
        print(f"grid: {r['grid']}" + (f"; images: {r['images_dir']}" if "images_dir" in r else ""))
    else:
        print("no --tokenizer: saved token ids only (samples.npz 'tokens', 'labels'); no images, no grid")
    return r
