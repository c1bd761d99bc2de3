"""The one checkpoint loader of the package, and the generator checkpoint format. Plain torch, no Lightning.

Every command that reads a ``.ckpt`` / ``.pth`` (sample, evaluate, flops, analyze, study,
import-official) reads it through ``read_torch_file``:

* ``torch.load(weights_only=True)`` always: a file holding pickled Python objects beyond tensors and
  containers is refused, because unpickling such objects can run code. Only an explicit
  ``trust=True`` (the commands' ``--trust_checkpoint`` flag, for files you made yourself) loads it
  with full unpickling.
* the checksum recorded beside the file at save time (``<file>.sha256``, ``enat_lightning.fileio``)
  is verified first, or, for a file that travelled without it, the CRC-32 of every member of the
  zip that ``torch.save`` writes (``fileio.verify_integrity``); a mismatch is a one-line error
  naming the file.
* weights that are NaN / inf (a diverged run) are refused by ``load_generator``.
* a missing, empty, truncated or foreign file is a one-line ``UserError`` naming the file and what to do.
* an export folder (``enat export``: config.json + model.safetensors + manifest.json,
  ``models/pretrained.py``) is accepted wherever a checkpoint is: every file's sha256 is checked against
  its manifest, and safetensors holds only tensors, so nothing needs trusting.

Generator checkpoint format (a Lightning checkpoint dict; only these keys matter here):

    ckpt["hyper_parameters"]["net"]   model config: {"class_path": "enat_lightning.models.ENATConfig",
                                      "init_args": {...}} (current form), or ``cfg.to_dict()`` (older files)
    ckpt["state_dict"]["ema.<key>"]   EMA weights of the network (preferred), or
    ckpt["state_dict"]["ema.module.<key>"]  (the same, wrapped in torch.optim.swa_utils.AveragedModel)
    ckpt["state_dict"]["net.<key>"]   raw weights, the fallback when the checkpoint has no EMA copy

``<key>`` are the parameter names of ``enat_lightning.models.ENAT`` / ``NAT``.
"""
from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import torch

from enat_lightning.errors import UserError
from enat_lightning.fileio import (ChecksumMismatchError, atomic_torch_save, verify_integrity,
                                  write_checksum)
from enat_lightning.models import build_model, config_from_dict
from enat_lightning.models.config import ModelConfig
from enat_lightning.models.pretrained import is_export_dir, net_to_yaml_form, read_network, weights_mismatch  # noqa: F401 (re-exported)

WEIGHT_PREFIXES = ("ema.module.", "ema.", "net.")  # tried in this order
MAKE_CHECKPOINT = "train one with `enat fit -c CONFIG.yaml` or convert official weights with `enat import-official`"
TRUST_FLAG = "--trust_checkpoint"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used (unreadable, corrupted, wrong content); the message names the file.
    Also a ValueError, so callers that treat bad values alike keep working."""


class UntrustedCheckpointError(CheckpointError):
    """The file holds pickled Python objects that ``weights_only`` loading refuses (they could run code)."""


def read_torch_file(path: str | os.PathLike, *, what: str = "checkpoint", trust: bool = False,
                    make_hint: str = MAKE_CHECKPOINT, map_location="cpu", mmap: bool = False):
    """``torch.load`` of a file we did not necessarily make: safe by default, every failure one line.

    ``what`` names the file's role in messages ("checkpoint", "official weights"); ``make_hint`` says
    which command makes such a file (shown when it is missing or unreadable). ``mmap``: map the file
    instead of reading it (only a few entries are needed). The package's ONE ``torch.load``: every
    other reader of a torch file calls this function (tests/test_import_layers.py checks).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist: {make_hint}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes; an interrupted copy or save?): delete it and copy it "
                        f"again, or {make_hint}")
    try:
        verify_integrity(path)  # the .sha256 sidecar, else the CRC-32 inside the zip
    except ChecksumMismatchError as e:
        raise CheckpointError(str(e)) from e
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - every reader error becomes one line naming the file
        text = str(e)
        if not trust and "GLOBAL" in text and zipfile.is_zipfile(path):
            culprit = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "")
            raise UntrustedCheckpointError(
                f"{what} {path} was refused: it holds pickled Python objects, not only tensors ({culprit}); "
                f"loading such objects can run code. Only if you made this file yourself or trust its source, "
                f"rerun with {TRUST_FLAG}") from e
        with open(path, "rb") as f:
            zip_head = f.read(4) == b"PK\x03\x04"  # torch.save's zip format, but no central directory
        kind = "truncated" if zip_head and not zipfile.is_zipfile(path) else "truncated, corrupted or not a PyTorch file"
        raise CheckpointError(f"{what} {path} cannot be read ({kind}; {type(e).__name__}): copy it again from its "
                        f"source, or {make_hint}") from e


def load_checkpoint_dict(path: str | os.PathLike, *, trust: bool = False) -> dict:
    """A training / generator checkpoint as a dict, read by ``read_torch_file``; an export folder
    (``enat export``) is read with safetensors and returned in the same form (no pickle: ``trust`` is moot)."""
    if Path(path).is_dir():
        return export_checkpoint_dict(path)
    ckpt = read_torch_file(path, trust=trust)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint: expected a dict with 'state_dict' and "
                        f"'hyper_parameters' (a plain state_dict of official weights goes through "
                        f"`enat import-official`)")
    return ckpt


def export_checkpoint_dict(path: str | os.PathLike) -> dict:
    """An export folder as a generator checkpoint dict: every file's sha256 checked, the config from
    config.json, the weights (the EMA copy it was exported from) from model.safetensors under ``ema.``."""
    cfg, weights, manifest = read_network(path)
    return {"hyper_parameters": {"net": net_to_yaml_form(cfg)}, "state_dict": {f"ema.{k}": v for k, v in weights.items()},
            "global_step": int((manifest.get("source") or {}).get("global_step") or 0), "export": manifest}


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """The sha256 that identifies a checkpoint file, or an export folder's (that of its manifest, which
    holds the sha256 of every file in it)."""
    from enat_lightning.fileio import sha256_file
    from enat_lightning.models.pretrained import MANIFEST

    path = Path(path)
    return sha256_file(path / MANIFEST if path.is_dir() else path)


def generator_config(ckpt: dict, path: str | os.PathLike = "checkpoint") -> ModelConfig:
    """The network config in ``hyper_parameters["net"]``: class_path/init_args or the older ``cfg.to_dict()``."""
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or not isinstance(hp.get("net"), dict):
        raise CheckpointError(f"checkpoint {path}: 'hyper_parameters' has no model config under 'net' "
                        f"(found keys {sorted(hp) if isinstance(hp, dict) else type(hp).__name__})")
    try:
        return config_from_dict(hp["net"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: bad model config in hyper_parameters['net']: {e}") from e


def generator_state_dict(ckpt: dict, path: str | os.PathLike = "checkpoint") -> tuple[dict, str]:
    """Network weights (prefix stripped) and the prefix they came from (EMA preferred)."""
    sd = ckpt["state_dict"]
    for prefix in WEIGHT_PREFIXES:
        weights = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if weights:
            return weights, prefix
    raise CheckpointError(f"checkpoint {path}: state_dict has no keys starting with {list(WEIGHT_PREFIXES)}; "
                    f"first keys: {sorted(sd)[:5]}")


def load_generator(ckpt_path: str | os.PathLike, device: str | torch.device = "cpu", *, trust: bool = False):
    """(model in eval mode with EMA weights, cfg) from a checkpoint; mismatches name the keys."""
    ckpt = load_checkpoint_dict(ckpt_path, trust=trust)
    cfg = generator_config(ckpt, ckpt_path)
    weights, prefix = generator_state_dict(ckpt, ckpt_path)
    model = build_model(cfg)
    own = model.state_dict()
    if prefix.startswith("ema."):
        weights.pop("n_averaged", None)  # AveragedModel's counter, not a network buffer
    problem = weights_mismatch(own, weights)
    if problem:
        raise CheckpointError(f"checkpoint {ckpt_path}: weights under '{prefix}' do not fit {cfg}: {problem}")
    check_finite_weights(weights, ckpt_path, prefix)
    model.load_state_dict(weights)
    # Which weights run, said where they are chosen: the help promises EMA; a checkpoint without an EMA
    # copy (ema_decay off, a hand-made file) samples its raw weights, and the user is told so.
    model.weights_source = "ema" if prefix.startswith("ema.") else "raw"
    model.checkpoint_path = str(ckpt_path)  # named by sampling's non-finite-logits error
    model.text_encoder_identity = ckpt.get("text_encoder")  # the encoder of its training captions (text models)
    if model.weights_source == "raw":
        print(f"note: checkpoint {ckpt_path} has no EMA weights; using its raw training weights ('{prefix}*')",
              file=sys.stderr)
    return model.to(device).eval(), cfg


def check_finite_weights(weights: dict, path, prefix: str = "") -> None:
    """A checkpoint with NaN / inf weights (a diverged run) is refused at load: it would sample id 0
    everywhere and score deceptively well. Raises CheckpointError naming the file and the tensors."""
    bad = [k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights (NaN/inf) in {len(bad)} tensor(s) under "
                              f"'{prefix}', e.g. {bad[:3]}: the run diverged before this save; use an earlier "
                              f"checkpoint of the run")


def save_generator_checkpoint(path: str | os.PathLike, cfg: ModelConfig, weights: dict,
                              extra: dict | None = None) -> Path:
    """Writes a checkpoint in the format above (atomically, with its checksum sidecar) with ``weights``
    as both the EMA and the raw network copy. torch.save stores a tensor shared by both keys once, so
    this costs no extra disk space."""
    state = {}
    for k, v in weights.items():
        state[f"net.{k}"] = v
        state[f"ema.{k}"] = v
    ckpt = {"hyper_parameters": {"net": net_to_yaml_form(cfg)}, "state_dict": state, "epoch": 0,
            "global_step": 0, **(extra or {})}
    path = atomic_torch_save(ckpt, path)
    write_checksum(path)
    return path
