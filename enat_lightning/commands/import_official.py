"""`enat import-official`: an official ENAT checkpoint (nnet_ema.pth) -> our generator checkpoint."""
from __future__ import annotations

HELP = "convert an official ENAT checkpoint (nnet_ema.pth) into a checkpoint for enat sample / evaluate / fit"


def add_arguments(p) -> None:
    p.add_argument("--nnet", required=True, help="official weights, e.g. nnet_ema.pth (a plain state_dict)")
    arch = p.add_mutually_exclusive_group(required=True)
    arch.add_argument("--preset", help="architecture preset, e.g. enat_l (see `enat models`)")
    arch.add_argument("--official-config", help="the official constructor arguments as JSON (inline or a .json "
                      "file): input_size, hidden_size, num_heads, enc_dec, [codebook_size, num_classes, mlp_ratio]")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--resolution", type=int, default=256, help="image side in pixels (latent grid = side/16)")
    p.add_argument("--out", required=True, help="checkpoint to write (atomically), e.g. enat_l.ckpt")


def import_official(nnet: str, preset_name: str | None, out: str, num_classes: int = 1000, resolution: int = 256,
                    official_config: dict | None = None) -> dict:
    """Reads official weights, checks them against the preset (or the official constructor
    arguments), writes a generator checkpoint (format: ``enat_lightning.sampling.checkpoint``)."""
    from pathlib import Path

    import torch

    from enat_lightning.models import ENATConfig, build_model, config_from_official, load_official_weights, preset
    from enat_lightning.sampling.checkpoint import save_generator_checkpoint

    if resolution % 16:
        raise ValueError(f"--resolution must be a multiple of 16, got {resolution}")
    if (preset_name is None) == (official_config is None):
        raise ValueError("give exactly one of --preset and --official-config")
    if official_config is not None:
        cfg = config_from_official(official_config)
    else:
        cfg = preset(preset_name, num_classes=num_classes, grid=resolution // 16)
    if not isinstance(cfg, ENATConfig):
        raise ValueError(f"preset {preset_name!r} is a NAT; official checkpoints are ENAT networks")
    path = Path(nnet)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    model = load_official_weights(build_model(cfg), sd, source=str(path))
    save_generator_checkpoint(out, cfg, model.state_dict(),
                              extra={"enat_import": {"source": str(path), "preset": preset_name,
                                                     "official_config": official_config}})
    return {"out": str(out), "preset": preset_name or "official config", "num_params": sum(p.numel() for p in model.parameters())}


def _read_json(text: str) -> dict:
    import json
    from pathlib import Path

    src = text if text.lstrip().startswith("{") else Path(text).read_text() if Path(text).is_file() else None
    if src is None:
        raise FileNotFoundError(f"--official-config {text} is neither inline JSON nor an existing file")
    try:
        return json.loads(src)
    except json.JSONDecodeError as e:
        raise ValueError(f"--official-config {text[:60]} is not valid JSON: {e}") from e


def run(args) -> int:
    oc = _read_json(args.official_config) if args.official_config else None
    r = import_official(args.nnet, args.preset, args.out, args.num_classes, args.resolution, oc)
    print(f"wrote {r['out']} ({r['preset']}, {r['num_params'] / 1e6:.2f}M parameters; EMA = net = official weights)")
    return 0
