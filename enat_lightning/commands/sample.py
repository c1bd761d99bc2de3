"""`enat sample`: class-conditional samples -> grid.png, samples.npz (ADM layout), optional PNGs."""
from __future__ import annotations

from pathlib import Path

from .sampler_flags import add_sampler_arguments, sampler_from_args

HELP = "generate images with a trained or imported ENAT/NAT (resumable, data-parallel over GPUs)"


def add_arguments(p) -> None:
    src = p.add_argument_group("model (one of)")
    src.add_argument("--ckpt", help="checkpoint from training or `enat import-official` (EMA weights are used)")
    src.add_argument("--config", help="preset name (e.g. enat_l) or YAML file with the model config; "
                                      "needs --official-weights")
    src.add_argument("--official-weights", help="official nnet_ema.pth to load into --config")
    src.add_argument("--num-classes", type=int, default=1000, help="with --config preset (default 1000)")
    src.add_argument("--resolution", type=int, default=256, help="with --config preset (default 256)")
    what = p.add_argument_group("what to sample")
    what.add_argument("--labels", help="comma-separated class ids, e.g. 1,2,3")
    what.add_argument("--per-class", type=int, help="N samples of each --labels class (of every class without "
                                                  "--labels), or of each --prompts line")
    what.add_argument("--prompts", help="text models: a file with one caption per line (needs --text-encoder)")
    what.add_argument("--text-encoder", help="with --prompts: the encoder of the training shards, 'clip:DIR' or "
                                             "'hash[:dim=..,length=..]'")
    add_sampler_arguments(p)
    s = p.add_argument_group("run")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=32)
    o = p.add_argument_group("output")
    o.add_argument("--tokenizer", help="VQGAN checkpoint (e.g. vqgan_jax_strongaug.ckpt) or a JSON tokenizer spec "
                                      "{\"kind\": ..., \"path\": ...}; without it only token ids are saved")
    o.add_argument("--out", help="output folder (rerun with the same arguments to resume); required unless --edit")
    e = p.add_argument_group("editing (inpainting / outpainting / class-editing)")
    e.add_argument("--edit", metavar="IMAGE", help="image to edit (tokenized with --tokenizer); the edited grid is "
                                                  "written beside it as IMAGE_edited.png (+ .npz tokens)")
    e.add_argument("--region", metavar="X0,Y0,X1,Y1", help="pixel box of IMAGE to regenerate (outpainting: a box "
                                                          "over padding around the content)")
    o.add_argument("--save-images", action="store_true", help="also write one PNG per sample")
    o.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: all GPUs, else CPU)")
    o.add_argument("--no-progress", action="store_true")


def parse_labels(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"--labels must be comma-separated integers, got {text!r}") from e


def config_from_yaml(path: Path):
    """Model config from a YAML file: the config dict itself, or under `net` / `model.net` /
    `model.init_args.net` (a LightningCLI experiment file)."""
    import yaml

    from enat_lightning.models import config_from_dict

    data = yaml.safe_load(path.read_text())
    candidates = [data]
    if isinstance(data, dict):
        model = data.get("model") or {}
        candidates += [data.get("net"), model.get("net") if isinstance(model, dict) else None,
                       (model.get("init_args") or {}).get("net") if isinstance(model, dict) else None]
    for c in candidates:
        if isinstance(c, dict) and ("class_path" in c or "width" in c or "arch" in c):
            return config_from_dict(c)  # reads the class_path form too
    raise ValueError(f"{path}: no model config found (looked at the top level, net, model.net, model.init_args.net)")


def load_model(args):
    import torch

    from enat_lightning.models import build_model, load_official_weights, preset

    if bool(args.ckpt) == bool(args.config):
        raise ValueError("give either --ckpt or --config (with --official-weights)")
    if args.ckpt:
        from enat_lightning.sampling.checkpoint import load_generator

        model, cfg = load_generator(args.ckpt)
        return model, {"ckpt": str(Path(args.ckpt).resolve())}
    if not args.official_weights:
        raise ValueError("--config needs --official-weights (a randomly initialised model samples noise)")
    path = Path(args.config)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        cfg = config_from_yaml(path)
    else:
        cfg = preset(args.config, num_classes=args.num_classes, grid=args.resolution // 16)
    weights = Path(args.official_weights)
    if not weights.is_file():
        raise FileNotFoundError(f"official weights {weights} do not exist")
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    model = load_official_weights(build_model(cfg), sd, source=str(weights)).eval()
    return model, {"config": args.config, "official_weights": str(weights.resolve())}


def load_tokenizer_spec(spec: str | None):
    if spec is None:
        return None
    import json

    from enat_lightning.tokenizers import load_tokenizer

    if spec.lstrip().startswith("{"):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"--tokenizer JSON spec does not parse: {e}") from e
    elif not Path(spec).is_file():
        raise FileNotFoundError(f"tokenizer checkpoint {spec} does not exist")
    return load_tokenizer(spec)


def run(args) -> int:
    import torch

    from enat_lightning.sampling.runner import SampleSettings, class_labels, sample_to_dir

    if args.edit or args.region:
        return run_edit(args)
    if not args.out:
        raise ValueError("--out is required (the output folder)")
    model, model_id = load_model(args)
    conditions = None
    if args.prompts:  # text model: sample i is conditioned on its prompt; labels = prompt line indices
        from enat_lightning.text import build_text_encoder, encode_prompts, prompts_sha1, read_prompts

        if not args.text_encoder:
            raise ValueError("--prompts needs --text-encoder (the encoder the training shards were made with)")
        prompts = read_prompts(args.prompts)
        labels = [i for i in range(len(prompts)) for _ in range(args.per_class or 1)]
        conditions = encode_prompts(prompts, build_text_encoder(args.text_encoder), model.cfg)[torch.tensor(labels)]
        model_id = {**model_id, "prompts_sha1": prompts_sha1(prompts), "text_encoder": args.text_encoder}
        from enat_lightning.sampling.io import atomic_write_bytes

        Path(args.out).mkdir(parents=True, exist_ok=True)  # labels in samples.npz index prompts.txt lines
        atomic_write_bytes(Path(args.out) / "prompts.txt", ("\n".join(prompts) + "\n").encode())
    elif model.cfg.condition == "text":
        raise ValueError("this is a text model: give --prompts FILE (one caption per line) and --text-encoder")
    else:
        labels = class_labels(model.cfg.num_classes, parse_labels(args.labels) if args.labels else None, args.per_class)
    tokenizer = load_tokenizer_spec(args.tokenizer)
    settings = SampleSettings(**sampler_from_args(args).to_dict(), seed=args.seed, batch_size=args.batch_size)
    devices = [torch.device(args.device)] if args.device else None
    r = sample_to_dir(model, labels, args.out, settings, tokenizer, save_images=args.save_images,
                      devices=devices, model_id=model_id, progress=not args.no_progress, conditions=conditions)
    print(f"{r['num_samples']} samples on {', '.join(r['devices'])} ({r['resumed']} chunks resumed) -> {r['samples_npz']}")
    if r["decoded"]:
        print(f"grid: {r['grid']}" + (f"; images: {r['images_dir']}" if "images_dir" in r else ""))
    else:
        print("no --tokenizer: saved token ids only (samples.npz 'tokens', 'labels'); no images, no grid")
    return 0


def run_edit(args) -> int:
    """`enat sample --edit IMAGE --region X0,Y0,X1,Y1 --labels ...`: regenerate the box once per label."""
    import numpy as np
    import torch
    from PIL import Image

    from enat_lightning.sampling import io as sio
    from enat_lightning.sampling.edit import edit, parse_region

    if not (args.edit and args.region):
        raise ValueError("--edit IMAGE and --region X0,Y0,X1,Y1 go together")
    image_path = Path(args.edit)
    if not image_path.is_file():
        raise FileNotFoundError(f"--edit image {image_path} does not exist")
    if not args.tokenizer:
        raise ValueError("--edit needs --tokenizer (the model's tokenizer turns the image into tokens)")
    if not args.labels:
        raise ValueError("--edit needs --labels: the class of each edit (e.g. the image's class to inpaint, "
                         "another class to class-edit)")
    labels = [c for c in parse_labels(args.labels) for _ in range(args.per_class or 1)]
    region = parse_region(args.region)
    model, _ = load_model(args)
    tokenizer = load_tokenizer_spec(args.tokenizer)
    device = torch.device(args.device) if args.device else torch.device("cpu")
    model = model.to(device)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    res = edit(model, tokenizer, image, region, torch.tensor(labels, device=device), sampler_from_args(args),
               torch.Generator(device=device).manual_seed(args.seed))
    out_dir = Path(args.out) if args.out else image_path.parent
    stem = image_path.stem + "_edited"
    source = sio.to_uint8(tokenizer.decode(res.source_ids[None]))  # (1, H, W, 3): the input as tokenized
    grid = sio.make_grid(np.concatenate([source, sio.to_uint8(res.images)]), nrow=len(labels) + 1)
    png = sio.save_png(out_dir / f"{stem}.png", grid)
    npz = sio.save_npz(out_dir / f"{stem}.npz", tokens=res.ids.cpu().numpy().astype(np.int64),
                       labels=np.asarray(labels, dtype=np.int64), token_mask=res.token_mask.cpu().numpy(),
                       source_tokens=res.source_ids.cpu().numpy().astype(np.int64))
    print(f"{len(labels)} edits of {image_path} (region {region}, {int(res.token_mask.sum())} tokens) -> {png} "
          f"(first tile: the input as tokenized), tokens -> {npz}")
    return 0
