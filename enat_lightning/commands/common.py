"""What several commands share: the network they work on, device and output checks. No heavy imports."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from enat_lightning.devices import check_device  # noqa: F401  (the one device check; commands import it from here)
from enat_lightning.errors import UserError




def check_output_file(path: Optional[Path], *, overwrite: bool, flag: str = "--out",
                      same_run=None) -> None:
    """Before any work: the output rule of ``fileio.check_output`` (exists and not ours -> refused unless
    ``--overwrite``; ``same_run(path)`` says this command made it with the same settings; writable)."""
    from enat_lightning.fileio import check_output

    if path is not None:
        check_output(path, overwrite=overwrite, is_ours=same_run, flag=flag)


def check_output_dir(path: Path, flag: str = "--out") -> None:
    """An output folder must be creatable and writable (checked before hours of sampling)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    from enat_lightning.fileio import nearest_existing

    folder = nearest_existing(path)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable ({folder} is read-only for this user); choose another {flag}")


def network_config(*, preset: Optional[str] = None, experiment: Optional[list[Path]] = None,
                   ckpt: Optional[Path] = None, resolution: Optional[int] = None, num_classes: Optional[int] = None,
                   overrides: tuple[str, ...] = (), trust_checkpoint: bool = False, import_code: bool = False,
                   command: str = "this command"):
    """(network config, whether it was trained to reuse) from exactly one of a preset (paper Table 7),
    training config(s) (resolved as ``enat fit`` would, importing no code outside the package unless
    ``import_code``) or a checkpoint."""
    given = [n for n, v in (("--preset", preset), ("-c/--experiment", experiment), ("--ckpt", ckpt)) if v]
    if len(given) != 1:
        raise UserError(f"give exactly one model source: --preset NAME, -c CONFIG.yaml (a training config) or "
                        f"--ckpt FILE{'' if not given else f' (got {given})'}")
    if preset:
        from enat_lightning.models import preset as make_preset
        from enat_lightning.models.config import PRESET_USES_REUSE

        over = {}
        if resolution:
            if resolution % 16:
                raise UserError(f"--resolution {resolution} must be a multiple of 16 (VQGAN downsampling)")
            over["grid"] = resolution // 16
        if num_classes:
            over["num_classes"] = num_classes
        cfg = make_preset(preset, **over)
        return cfg, cfg.supports_reuse and PRESET_USES_REUSE.get(preset.lower().replace("_", "-"), True)
    if experiment:
        from enat_lightning.training_config import model_config, resolve_training_config, trains_with_reuse

        resolved = resolve_training_config(experiment, overrides, import_code=import_code, command=command)
        return model_config(resolved), trains_with_reuse(resolved)
    from enat_lightning.sampling.checkpoint import generator_config, load_checkpoint_dict

    cfg = generator_config(load_checkpoint_dict(ckpt, trust=trust_checkpoint), ckpt)
    return cfg, cfg.supports_reuse


def sampler_for(sampler, can_reuse: bool):
    """The user's sampler settings, with reuse off for a network that cannot or was not trained to reuse."""
    import dataclasses

    return sampler if sampler.reuse == (sampler.reuse and can_reuse) else dataclasses.replace(sampler, reuse=False)


# optional extras (pyproject [project.optional-dependencies]): requirement -> (extra, what needs it)
EXTRAS = {"torch-fidelity>=0.3": ("eval", "the Inception-v3 FID / IS network"),
          "transformers>=4.40": ("t2i", "the CLIP text encoder")}


def require_extra(requirement: str) -> None:
    """A one-line error naming the pip extra when an optional dependency is missing (RequirementCache)."""
    from lightning_utilities.core.imports import RequirementCache

    extra, what = EXTRAS[requirement]
    if not RequirementCache(requirement):
        raise UserError(f"{what} needs {requirement}, which is not installed: pip install 'enat-lightning[{extra}]' "
                        f"(or pip install '{requirement}')")


def feature_spec(inception: Optional[Path], feature: Optional[str], default: Optional[str]) -> str:
    """The feature network from ``--inception PATH`` / ``--feature SPEC``; checks the [eval] extra for Inception."""
    if inception is not None and feature is not None:
        raise UserError("give either --inception PATH or --feature, not both")
    spec = f"inception:{inception}" if inception is not None else feature if feature is not None else default
    if spec is None:
        raise UserError("choose the feature network: --inception PATH (ImageNet FID) or --feature demo")
    if spec.startswith("inception:") or spec.endswith((".pth", ".pt")):
        path = Path(spec.split(":", 1)[1] if spec.startswith("inception:") else spec)
        if not path.is_file():  # fail now, with the evaluation package's message (where to download it)
            from enat_lightning.evaluation import load_feature_extractor

            load_feature_extractor(spec)
        require_extra("torch-fidelity>=0.3")
    return spec


def load_features(spec: str, device: str):
    """``evaluation.load_feature_extractor`` with every failure of a weights file as one line naming it."""
    from enat_lightning.evaluation import load_feature_extractor

    try:
        return load_feature_extractor(spec, device=device)
    except (UserError, FileNotFoundError, ImportError):
        raise
    except Exception as e:  # noqa: BLE001 - a garbage / truncated weights file fails deep inside torch
        name = spec.split(":", 1)[1] if ":" in spec else spec
        raise UserError(f"feature network weights {name} cannot be loaded ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:160]}): the file is damaged or not that network; download it "
                        f"again") from e


@contextmanager
def writing(path: Path):
    """Around an (atomic) write of ``path``: an OSError (disk full, read-only file system) becomes one line
    naming ``path``; the atomic writer has already removed its temporary file, the old ``path`` is untouched."""
    try:
        yield
    except OSError as e:
        from enat_lightning.errors import os_error_message

        raise UserError(f"cannot write {path}: {os_error_message(e)}") from e


def prompt_encoder(text_encoder: Optional[str], model=None):
    """The text encoder for ``--prompts`` (``--text_encoder`` is required; CLIP needs the [t2i] extra),
    checked against the encoder the model's checkpoint records (``text.base.check_encoder_identity``)."""
    from enat_lightning.text import build_text_encoder
    from enat_lightning.text.base import check_encoder_identity

    if not text_encoder:
        raise UserError("--prompts needs --text_encoder (the encoder the training shards were made with)")
    if not text_encoder.startswith("hash"):  # a CLIP text model: the [t2i] extra
        require_extra("transformers>=4.40")
    encoder = build_text_encoder(text_encoder)
    recorded = getattr(model, "text_encoder_identity", None)
    check_encoder_identity(encoder.identity(), recorded, f"checkpoint {getattr(model, 'checkpoint_path', '')}".strip())
    return encoder
