"""The export folder: a network as ``config.json`` + ``model.safetensors`` (the Hugging Face layout), pure torch.

An export folder (``enat export``, ``model.save_pretrained(DIR)``) holds:

    config.json          the network config in the one serialised form {"class_path": ..., "init_args": {...}}
    model.safetensors    the weights (EMA weights for an exported checkpoint); safetensors holds only
                         tensors, so loading it never runs code (no pickle, no --trust_checkpoint)
    manifest.json        {"format": "enat-lightning export", "version": 1, "files": {name: sha256}, ...}
    ...                  whatever else the writer adds (sampler.yaml, tokenizer.json, README.md), all
                         listed with their sha256 in the manifest

``verify_export`` checks every listed file before anything is read: a missing or altered file is a
one-line ``UserError`` naming it. ``write_export`` writes the whole folder atomically (a temporary
sibling folder renamed into place), and refuses to replace a folder that is not an export.

``from_pretrained`` / ``save_pretrained`` (``PretrainedMixin``, on every network) mirror
huggingface_hub's ``PyTorchModelHubMixin`` names on local folders only: nothing here reaches a network.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from enat_lightning.errors import UserError
from enat_lightning.fileio import fsync_path, sha256_file

FORMAT = "enat-lightning export"
VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
MAKE_EXPORT = "make it again with `enat export --ckpt CKPT --out DIR` (or copy the folder again)"


class ExportError(UserError, ValueError):
    """An export folder that cannot be used (missing / altered file, foreign folder); names the file."""


def net_to_yaml_form(cfg) -> dict:
    """The one serialised form of a network config: ``{"class_path": ..., "init_args": {...}}``."""
    return {"class_path": f"enat_lightning.models.{type(cfg).__name__}", "init_args": dataclasses.asdict(cfg)}


def is_export_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder whose manifest.json says it is an export (contents not yet verified)."""
    m = Path(path) / MANIFEST
    try:
        return m.is_file() and json.loads(m.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def verify_export(path: str | os.PathLike) -> dict:
    """The manifest of the export folder ``path`` after checking the sha256 of every file it lists."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"export folder {path} does not exist: {MAKE_EXPORT}")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ExportError(f"{path} is a folder but not an export: it has no {MANIFEST} (give a .ckpt file or a "
                          f"folder written by `enat export`)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"export {mpath} cannot be read ({e}): {MAKE_EXPORT}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ExportError(f"{mpath} is not an enat-lightning export manifest (no format {FORMAT!r} with 'files')")
    if manifest.get("version") != VERSION:
        raise ExportError(f"{mpath}: export version {manifest.get('version')!r} is not supported (this code reads "
                          f"version {VERSION})")
    for name, digest in sorted(manifest["files"].items()):
        f = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ExportError(f"{mpath} lists {name!r}, which is outside the folder")
        if not f.is_file():
            raise ExportError(f"export {path} is missing {name} (listed in {MANIFEST}): {MAKE_EXPORT}")
        if sha256_file(f) != digest:
            raise ExportError(f"export file {f} was altered: its sha256 differs from the one in {MANIFEST} "
                              f"(a damaged copy or an edit): {MAKE_EXPORT}")
    return manifest


def write_export(path: str | os.PathLike, files: dict[str, bytes], meta: dict | None = None, *,
                 overwrite: bool = False) -> Path:
    """Writes ``files`` ({name: bytes}) and their manifest as the folder ``path``, atomically.

    A fresh or empty ``path`` is created; an existing export is replaced only with ``overwrite``; any
    other non-empty folder (or a file) is refused, with or without ``overwrite``.
    """
    path = Path(path)
    check_export_target(path, overwrite=overwrite)
    manifest = {"format": FORMAT, "version": VERSION, **(meta or {}), "files": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
            manifest["files"][name] = sha256_file(tmp / name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o644)
                fsync_path(f)
        os.chmod(tmp, 0o755)
        old = None
        if path.exists():  # an empty folder, or an export being replaced: move it aside, then swap
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_export_target(path: Path, *, overwrite: bool, flag: str = "--out") -> None:
    """Refuses an ``--out`` that is a file, a non-empty folder that is not an export, or an export without
    ``overwrite``; checked before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder for the export")
    if path.is_dir() and any(path.iterdir()):
        if not is_export_dir(path):
            raise UserError(f"{flag} {path} is a folder that is not an export (no {MANIFEST} of ours); it is never "
                            f"replaced: choose a new or empty folder")
        if not overwrite:
            raise UserError(f"{flag} {path} already holds an export; pass --overwrite to replace it, or choose "
                            f"another {flag}")


# -- the network files --------------------------------------------------------------------------------
def weights_bytes(state_dict: dict) -> bytes:
    """A state dict as safetensors bytes (tensors sharing memory are stored as separate copies)."""
    from safetensors.torch import save

    seen, out = set(), {}
    for k, v in state_dict.items():
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = v.clone() if key in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size() else v
        seen.add(key)
    return save(out, metadata={"format": "pt"})


def network_files(model) -> dict[str, bytes]:
    """config.json and model.safetensors of ``model`` (a network with a ``cfg``)."""
    return {CONFIG: (json.dumps(net_to_yaml_form(model.cfg), indent=2) + "\n").encode(),
            WEIGHTS: weights_bytes(model.state_dict())}


def read_network(path: str | os.PathLike) -> tuple[object, dict, dict]:
    """(config, weights state dict, manifest) of the export folder ``path``, every file checked first."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import config_from_dict

    path = Path(path)
    manifest = verify_export(path)
    for name in (CONFIG, WEIGHTS):
        if name not in manifest["files"]:
            raise ExportError(f"export {path} has no {name} in its {MANIFEST}: {MAKE_EXPORT}")
    try:
        cfg = config_from_dict(json.loads((path / CONFIG).read_text()))
    except (TypeError, ValueError) as e:
        raise ExportError(f"export {path / CONFIG}: bad network config ({e})") from e
    try:
        weights = load_file(path / WEIGHTS)
    except (SafetensorError, OSError, ValueError) as e:
        raise ExportError(f"export {path / WEIGHTS} cannot be read ({e}): {MAKE_EXPORT}") from e
    return cfg, weights, manifest


class PretrainedMixin:
    """``save_pretrained(DIR)`` / ``Class.from_pretrained(DIR)`` on local export folders (no hub access)."""

    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False,
                        extra_files: dict[str, bytes] | None = None, meta: dict | None = None) -> Path:
        """Writes this network as an export folder (config.json + model.safetensors + manifest.json)."""
        return write_export(save_directory, {**network_files(self), **(extra_files or {})}, meta, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu"):
        """The network of an export folder, in eval mode; ``cls`` may be a network class (checked) or a base."""
        cfg, weights, _ = read_network(directory)
        net = network_class(cfg)
        if not issubclass(net, cls):
            raise ExportError(f"export {directory} holds a {net.__name__} ({type(cfg).__name__}), not a "
                              f"{cls.__name__}: load it with {net.__name__}.from_pretrained")
        model = net(cfg)
        load_weights(model, weights, str(directory))
        return model.to(device).eval()


def network_class(cfg) -> type:
    """The network class of a config (``ENATConfig`` -> ``ENAT``, as ``models.build_model``), found among the
    classes that have this mixin, so this module need not import the networks (no import cycle)."""
    name = type(cfg).__name__.removesuffix("Config")
    todo, seen = list(PretrainedMixin.__subclasses__()), set()
    while todo:
        c = todo.pop()
        if c.__name__ == name and c.__module__.startswith(__package__ + "."):
            return c
        seen.add(c)
        todo += [s for s in c.__subclasses__() if s not in seen]
    raise ExportError(f"no network class {name} for {type(cfg).__name__}")


def weights_mismatch(own: dict, weights: dict) -> str | None:
    """What keeps ``weights`` from loading into a model whose state dict is ``own`` (missing / unexpected /
    misshapen keys, the first eight of each), or None when they fit."""
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = [f"{k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(weights)) if weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        return f"missing {missing[:8]}, unexpected {unexpected[:8]}, shape mismatches {wrong[:8]}"
    return None


def load_weights(model, weights: dict, where: str) -> None:
    """``model.load_state_dict(weights)`` with missing / unexpected / misshapen keys as one line naming ``where``."""
    problem = weights_mismatch(model.state_dict(), weights)
    if problem:
        raise ExportError(f"{where}: weights do not fit {model.cfg}: {problem}")
    model.load_state_dict(weights)
