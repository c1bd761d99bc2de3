"""`enat import-official`: an official ENAT checkpoint (nnet_ema.pth) -> our generator checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union
from enat_lightning.errors import MissingInput


def import_official(nnet: Path, out: Path, preset: Optional[str] = None,
                    official_config: Optional[Union[dict, str]] = None, num_classes: int = 1000,
                    resolution: int = 256, trust_checkpoint: bool = False, overwrite: bool = False) -> dict:
    """Convert an official ENAT checkpoint (nnet_ema.pth) into a checkpoint for enat sample / evaluate / fit.

    Args:
        nnet: official weights, e.g. nnet_ema.pth (a plain state_dict)
        out: checkpoint to write (atomically, with its .sha256 checksum), e.g. enat_l.ckpt
        preset: architecture preset, e.g. enat_l (see `enat models`)
        official_config: instead of --preset: the official constructor arguments (JSON inline, a .json file, or a
            mapping in -c YAML): input_size, hidden_size, num_heads, enc_dec, [codebook_size, num_classes, mlp_ratio]
        num_classes: with --preset
        resolution: with --preset: image side in pixels (latent grid = side/16)
        trust_checkpoint: load an --nnet holding pickled Python objects (can run code; only files you trust)
        overwrite: replace an existing --out (never done otherwise: it may be a training checkpoint)
    """
    from enat_lightning.errors import UserError
    from enat_lightning.fileio import check_output, claim_output
    from enat_lightning.models import ENATConfig, build_model, config_from_official, load_official_weights
    from enat_lightning.models import preset as make_preset
    from enat_lightning.sampling.checkpoint import read_torch_file, save_generator_checkpoint

    if resolution % 16:
        raise UserError(f"--resolution must be a multiple of 16, got {resolution}")
    check_output(out, overwrite=overwrite)  # before reading a GB of weights
    if (preset is None) == (official_config is None):
        raise UserError("give exactly one of --preset and --official_config")
    if official_config is not None:
        oc = _read_json(official_config) if isinstance(official_config, str) else dict(official_config)
        cfg = config_from_official(oc)
    else:
        oc, cfg = None, make_preset(preset, num_classes=num_classes, grid=resolution // 16)
    if not isinstance(cfg, ENATConfig):
        raise UserError(f"preset {preset!r} is a NAT; official checkpoints are ENAT networks")
    sd = read_torch_file(nnet, what="official checkpoint", trust=trust_checkpoint,
                         make_hint="download nnet_ema.pth of the official ENAT release")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    model = load_official_weights(build_model(cfg), sd, source=str(nnet))
    with claim_output(out, overwrite=overwrite):
        save_generator_checkpoint(out, cfg, model.state_dict(),
                                  extra={"enat_import": {"source": str(nnet), "preset": preset, "official_config": oc}})
    r = {"out": str(out), "preset": preset or "official config",
         "num_params": sum(p.numel() for p in model.parameters())}
    print(f"wrote {r['out']} ({r['preset']}, {r['num_params'] / 1e6:.2f}M parameters; EMA = net = official weights)")
    return r


def _read_json(text: str) -> dict:
    import json

    from enat_lightning.errors import UserError

    src = text if text.lstrip().startswith("{") else Path(text).read_text() if Path(text).is_file() else None
    if src is None:
        raise MissingInput(f"--official_config {text} is neither inline JSON nor an existing file")
    try:
        return json.loads(src)
    except json.JSONDecodeError as e:
        raise UserError(f"--official_config {text[:60]} is not valid JSON: {e}") from e
