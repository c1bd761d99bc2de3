"""`enat sample`: class-conditional (or captioned) samples -> grid.png, samples.npz (ADM layout), optional PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from enat_lightning.sampling.settings import SamplerSettings
from enat_lightning.errors import MissingInput


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
        return model, {"ckpt": str(Path(ckpt).resolve()), "weights": model.weights_source}
    if not (preset or experiment):
        raise UserError("give either --ckpt or --preset / -c CONFIG.yaml (with --official_weights)")
    if official_weights is None:
        raise UserError("--preset / -c need --official_weights (a randomly initialised model samples noise)")
    from enat_lightning.models import build_model, load_official_weights
    from enat_lightning.sampling.checkpoint import read_torch_file

    cfg, _ = network_config(preset=preset, experiment=experiment, resolution=resolution, command="enat sample",
                            num_classes=num_classes if preset else None)
    sd = read_torch_file(official_weights, what="official weights", trust=trust_checkpoint,
                         make_hint="download nnet_ema.pth of the official ENAT release")
    from enat_lightning.sampling.checkpoint import check_finite_weights

    if isinstance(sd, dict):
        check_finite_weights(sd, official_weights)
    model = load_official_weights(build_model(cfg), sd, source=str(official_weights)).eval()
    model.checkpoint_path = str(official_weights)
    return model, {"config": preset or [str(e) for e in experiment],
                   "official_weights": str(Path(official_weights).resolve())}


def sample(out: Optional[Path] = None, ckpt: Optional[Path] = None, preset: Optional[str] = None,
           experiment: Optional[list[Path]] = None, official_weights: Optional[Path] = None,
           num_classes: int = 1000, resolution: int = 256, labels: Optional[list[int]] = None,
           per_class: Optional[int] = None, prompts: Optional[Path] = None, text_encoder: Optional[str] = None,
           tokenizer: Optional[str] = None, save_images: bool = False, device: Optional[str] = None,
           progress: bool = True, seed: int = 0, batch_size: int = 32, overwrite: bool = False,
           trust_checkpoint: bool = False, edit: Optional[Path] = None, region: Optional[str] = None,
           sampler: SamplerSettings = SamplerSettings()) -> dict:
    """Generate images with a trained or imported ENAT/NAT (resumable, data-parallel over GPUs), or edit an image.

    Args:
        out: output folder (rerun with the same arguments to resume); required unless --edit (default: beside IMAGE)
        ckpt: checkpoint from `enat fit` or `enat import-official` (its EMA weights; the raw weights, with a note saying so, when it has no EMA copy)
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
        edit: image to edit (inpainting / outpainting / class-editing; tokenized with --tokenizer); the edited grid is written beside it as IMAGE_edited.png (+ .npz tokens)
        region: with --edit: X0,Y0,X1,Y1 pixel box of IMAGE to regenerate (outpainting: a box over padding); the classes come from --labels
        sampler: sampler settings (defaults: the official ImageNet-256 setting)
    """
    import torch

    from enat_lightning.commands.common import check_device, check_output_dir
    from enat_lightning.tokenizers import check_codebook_size, load_tokenizer, spec_text
    from enat_lightning.errors import UserError
    from enat_lightning.fileio import OutputLock, lock_path
    from enat_lightning.prediction import sample_to_dir
    from enat_lightning.sampling.runner import SampleRun, class_labels

    check_device(device)
    if edit is not None or region is not None:
        return edit_image(edit, region, labels, per_class, out, ckpt=ckpt, preset=preset, experiment=experiment,
                          official_weights=official_weights, num_classes=num_classes, resolution=resolution,
                          tokenizer=tokenizer, device=device, seed=seed, trust_checkpoint=trust_checkpoint,
                          sampler=sampler, overwrite=overwrite)
    if out is None:
        raise UserError("--out is required: the folder the samples go to (or --edit IMAGE --region ... to edit an image)")
    check_output_dir(out)
    model, model_id = load_network(ckpt, preset, experiment, official_weights, num_classes, resolution,
                                   trust_checkpoint)
    conditions, extra = None, None
    if prompts is not None:  # text model: sample i is conditioned on its prompt; labels = prompt line indices
        from enat_lightning.commands.common import prompt_encoder
        from enat_lightning.text import encode_prompts, prompts_sha1, read_prompts

        encoder = prompt_encoder(text_encoder, model)
        lines = read_prompts(prompts)
        wanted = [i for i in range(len(lines)) for _ in range(per_class or 1)]
        conditions = encode_prompts(lines, encoder, model.cfg)[torch.tensor(wanted)]
        model_id = {**model_id, "prompts_sha1": prompts_sha1(lines), "text_encoder": text_encoder}
        extra = {"prompts.txt": ("\n".join(lines) + "\n").encode()}  # labels in samples.npz index its lines
    elif model.cfg.condition == "text":
        raise UserError("this is a text model: give --prompts FILE (one caption per line) and --text_encoder")
    else:
        wanted = class_labels(model.cfg.num_classes, labels, per_class)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    if tok is not None:
        check_codebook_size(tok, model.cfg.codebook_size, "the generator", f"--tokenizer {spec_text(tokenizer)}")
    with OutputLock(lock_path(out, folder=True), what=f"--out {out}", holder="sample run"):  # one writer
        r = sample_to_dir(model, wanted, out, sampler, tok, run=SampleRun(seed, batch_size), save_images=save_images,
                          overwrite=overwrite, device=device, model_id=model_id, progress=progress,
                          extra_files=extra, conditions=conditions)
    if "samples_npz" not in r:  # a rank > 0 of a multi-GPU run: rank 0 reports
        return r
    print(f"{r['num_samples']} samples on {', '.join(r['devices'])} ({r['resumed']} chunks resumed) -> "
          f"{r['samples_npz']}")
    if r["decoded"]:
        print(f"grid: {r['grid']}" + (f"; images: {r['images_dir']}" if "images_dir" in r else ""))
    else:
        print("no --tokenizer: saved token ids only (samples.npz 'tokens', 'labels'); no images, no grid")
    return r


def edit_image(image: Optional[Path], region: Optional[str], labels: Optional[list[int]], per_class: Optional[int],
               out: Optional[Path], *, ckpt, preset, experiment, official_weights, num_classes, resolution,
               tokenizer, device, seed, trust_checkpoint, sampler: SamplerSettings, overwrite: bool = False) -> dict:
    """`enat sample --edit IMAGE --region X0,Y0,X1,Y1 --labels ...`: regenerate the box once per label;
    tokens outside it stay as the image's (``sampling.edit``)."""
    import numpy as np
    import torch
    from PIL import Image

    from enat_lightning.commands.common import check_output_dir
    from enat_lightning.fileio import check_output
    from enat_lightning.tokenizers import check_codebook_size, load_tokenizer, spec_text
    from enat_lightning.errors import UserError
    from enat_lightning.sampling import io as sio
    from enat_lightning.sampling.edit import edit, parse_region

    if image is None or region is None:
        raise UserError("--edit IMAGE and --region X0,Y0,X1,Y1 go together")
    image = Path(image)
    if not image.is_file():
        raise MissingInput(f"--edit image {image} does not exist")
    if tokenizer is None:
        raise UserError("--edit needs --tokenizer (the model's tokenizer turns the image into tokens)")
    if not labels:
        raise UserError("--edit needs --labels: the class of each edit (e.g. the image's class to inpaint, "
                        "another class to class-edit)")
    out_dir = Path(out) if out is not None else image.parent
    check_output_dir(out_dir)
    stem = image.stem + "_edited"
    for path in (out_dir / f"{stem}.png", out_dir / f"{stem}.npz"):  # a user's file of that name stays
        check_output(path, overwrite=overwrite, flag="--edit output")
    wanted = [c for c in labels for _ in range(per_class or 1)]
    box = parse_region(region)
    model, _ = load_network(ckpt, preset, experiment, official_weights, num_classes, resolution, trust_checkpoint)
    tok = load_tokenizer(tokenizer)
    check_codebook_size(tok, model.cfg.codebook_size, "the generator", f"--tokenizer {spec_text(tokenizer)}")
    dev = torch.device(device) if device else torch.device("cpu")
    model = model.to(dev)
    pixels = np.asarray(Image.open(image).convert("RGB"))
    res = edit(model, tok, pixels, box, torch.tensor(wanted, device=dev), sampler,
               torch.Generator(device=dev).manual_seed(seed))
    source = sio.to_uint8(tok.decode(res.source_ids[None]))  # (1, H, W, 3): the input as tokenized
    grid = sio.make_grid(np.concatenate([source, sio.to_uint8(res.images)]), nrow=len(wanted) + 1)
    png = sio.save_png(out_dir / f"{stem}.png", grid)
    npz = sio.save_npz(out_dir / f"{stem}.npz", tokens=res.ids.cpu().numpy().astype(np.int64),
                       labels=np.asarray(wanted, dtype=np.int64), token_mask=res.token_mask.cpu().numpy(),
                       source_tokens=res.source_ids.cpu().numpy().astype(np.int64))
    print(f"{len(wanted)} edits of {image} (region {box}, {int(res.token_mask.sum())} tokens) -> {png} "
          f"(first tile: the input as tokenized), tokens -> {npz}")
    return {"png": str(png), "npz": str(npz), "region": box, "tokens_edited": int(res.token_mask.sum())}
