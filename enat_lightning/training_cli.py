"""``enat fit|validate|test`` and ``lightning fit``: LightningCLI over ENATModule.

Configs: ``model:`` holds ENATModule's arguments (``model.net`` with ``class_path`` ENATConfig or
NATConfig and its fields as ``init_args``); ``data:`` any LightningDataModule by class_path;
``trainer:`` the Trainer. Several ``-c`` files compose, later ones overriding earlier ones. The parser
runs in omegaconf+ mode: ``${model.net.init_args.grid}`` anywhere refers to the final, composed
value (after every ``-c`` file and command-line override), so the data section never repeats it.
Parsing and instantiation happen before any training: an unknown key or wrong type exits with
jsonargparse's message naming the key; a bad value raises ValueError naming the YAML key.

What ``fit`` adds to plain LightningCLI (docs/training.md, docs/reliability.md):
- checkpoints written beside their target, fsynced and renamed, with a sha256 sidecar
  (``checkpointing.AtomicCheckpointIO``); ``last.ckpt`` saved at the end, on Ctrl-C and on pre-emption;
- ``--ckpt_path last`` resumes the newest VALID checkpoint of the run (last, periodic or SLURM hpc),
  skipping truncated or corrupted files with a message;
- ``--ckpt_path FILE|last``: the config describes the run. A network that differs from the checkpoint's is
  an error naming the key and both values; other hyper-parameters (lr, ema_decay, ...) come from the
  config and the differences are printed;
- a run directory holds one run: a fresh fit into a non-empty one is refused, a second concurrent
  writer is refused (lock file), and a failed check writes nothing.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path

import jsonargparse
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from enat_lightning.checkpointing import (AtomicCheckpointIO, RunCheckpoints, RunDirLock, checkpoint_problem,
                                          newest_valid_checkpoint, resume_candidates)
from enat_lightning.errors import UserError
from enat_lightning.models import config_from_dict
from enat_lightning.module import ENATModule, NonFiniteLossError, upgrade_checkpoint

# omegaconf+: interpolations resolve on the composed config. Absolute paths (``${model.net.init_args.grid}``)
# are rewritten relative to the node, so they resolve inside the subcommand (fit/validate/test).
PARSER_KWARGS = {"parser_mode": "omegaconf+"}
jsonargparse.set_parsing_settings(omegaconf_absolute_to_relative_paths=True)

# Fields of a network config that change training only, not the weights: the config may change them on resume.
TRAINING_ONLY_NET_FIELDS = ("class_dropout_prob", "embed_dropout")
# Data keys checked against the network: (data key, network field).
DATA_KEYS = (("codebook_size", "codebook_size"), ("latent_side", "grid"), ("grid", "grid"),
             ("num_classes", "num_classes"))


def say(message: str) -> None:
    """One line for the user on stderr (rank 0 only)."""
    if rank_zero_only.rank == 0:
        print(f"enat: {message}", file=sys.stderr, flush=True)


class ENATLightningCLI(LightningCLI):
    """LightningCLI with the project's defaults (the optimizer is configured by ENATModule) and the
    checkpoint / run-directory rules above. ``ckpt_path`` is taken out of the parsed config and
    resolved here (it needs the trainer's folders), which also keeps LightningCLI from overwriting the
    config with the checkpoint's hyper-parameters: the config is what the user asked for."""

    def __init__(self, *args, parser_kwargs: dict | None = None, **kwargs) -> None:
        # omegaconf+ for every user of this CLI class (enat fit, studies, YAML resolution), unless told otherwise
        super().__init__(*args, parser_kwargs={**PARSER_KWARGS, **(parser_kwargs or {})}, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        self.ckpt_request = self.config[sub].get("ckpt_path") if sub else None
        if sub:
            self.config[sub].ckpt_path = None
        if sub == "fit":
            max_steps = self.config.fit.trainer.get("max_steps")
            if max_steps is not None and max_steps != -1 and max_steps < 1:
                parser.error(f"trainer.max_steps={max_steps}: give a positive number of optimizer steps "
                             "(or -1 for no limit, with trainer.max_epochs)")

    def instantiate_trainer(self, **kwargs):
        if self.subcommand == "fit":
            plugins = self._get(self.config_init, "trainer").get("plugins") or []
            plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):  # a user's own CheckpointIO stays
                plugins.append(AtomicCheckpointIO())
            kwargs.setdefault("plugins", plugins)
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "fit":
            self.run_checkpoints = RunCheckpoints()
            trainer.callbacks.append(self.run_checkpoints)
        return trainer

    # -- subcommands --------------------------------------------------------------------------------------
    def fit(self, model, **kwargs) -> None:
        kwargs.pop("ckpt_path", None)  # taken out in parse_arguments, resolved here
        trainer = self.trainer
        dirs = run_dirs(trainer)
        check_data_against_model(model, kwargs.get("datamodule"), self.config.fit.get("data"))
        ckpt = self.resolve_ckpt(model, dirs)
        if ckpt is None and self.ckpt_request != "last":
            for d in dirs["written"]:
                refuse_non_empty(d)
        lock = RunDirLock(dirs["run"]) if dirs["run"] and is_launch_rank_zero() else None
        if lock:
            lock.acquire()
        try:
            trainer.fit(model, ckpt_path=str(ckpt) if ckpt else None, **kwargs)
        finally:
            if lock:
                lock.release()
        stopped = getattr(self.run_checkpoints, "stopped_by", None)
        if stopped == "interrupt":
            say(f"interrupted at step {trainer.global_step}; last.ckpt saved. Continue with --ckpt_path last")
            raise SystemExit(130)
        if stopped == "preempt":
            then = "job requeued" if self.run_checkpoints.auto_requeue else "continue with --ckpt_path last"
            say(f"pre-empted at step {trainer.global_step}; last.ckpt saved, {then}")

    def validate(self, model, **kwargs) -> None:
        kwargs["ckpt_path"] = self._eval_ckpt(model)
        self.trainer.validate(model, **kwargs)

    def test(self, model, **kwargs) -> None:
        kwargs["ckpt_path"] = self._eval_ckpt(model)
        self.trainer.test(model, **kwargs)

    def _eval_ckpt(self, model) -> str | None:
        ckpt = self.resolve_ckpt(model, run_dirs(self.trainer))
        return str(ckpt) if ckpt else None

    # -- which checkpoint, and does it fit the config? ------------------------------------------------------
    def resolve_ckpt(self, model, dirs: dict) -> Path | None:
        request = self.ckpt_request
        if request is None:
            return None
        if request == "last":
            candidates = resume_candidates(dirs["checkpoints"], dirs["hpc"])
            path = newest_valid_checkpoint(candidates, log=lambda m: say(m))
            where = ", ".join(str(d) for d in dirs["checkpoints"]) or "(no checkpoint folder configured)"
            if path is None:
                say(f"--ckpt_path last: no valid checkpoint in {where}; starting from step 0")
                return None
            say(f"--ckpt_path last: resuming from {path}")
        elif request in ("best", "hpc"):
            return request  # Lightning's own meanings
        else:
            path = Path(request)
            if not path.is_file():
                raise UserError(f"--ckpt_path {request}: no such file")
            problem = checkpoint_problem(path)
            if problem:
                raise UserError(f"--ckpt_path {request}: {problem}. Pick another checkpoint of the run, or "
                                "--ckpt_path last to take the newest valid one")
        check_checkpoint_against_config(path, model)
        return path


# -- checks ---------------------------------------------------------------------------------------------------
def check_checkpoint_against_config(path: Path, model: ENATModule) -> None:
    """The network must be the checkpoint's (error naming the key and both values); every other
    hyper-parameter comes from the config, and each difference is printed."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    hp = upgrade_checkpoint({"hyper_parameters": dict(ckpt.get("hyper_parameters") or {})})["hyper_parameters"]
    if not isinstance(hp.get("net"), dict):
        return  # not one of ours: Lightning's own checks apply
    theirs, ours = config_from_dict(hp["net"]), model.cfg
    if type(theirs) is not type(ours):
        raise UserError(f"{path}: model.net.class_path: checkpoint {type(theirs).__name__}, config "
                        f"{type(ours).__name__}; resume with the checkpoint's config (its config.yaml)")
    a, b = dataclasses.asdict(theirs), dataclasses.asdict(ours)
    wrong = [f"model.net.init_args.{k}: checkpoint {a[k]}, config {b[k]}" for k in a
             if a[k] != b[k] and k not in TRAINING_ONLY_NET_FIELDS]
    if wrong:
        raise UserError(f"{path} holds another network than the config: {'; '.join(wrong)}. Resume with the "
                        "checkpoint's values (its run's config.yaml) or start a new run")
    changed = [f"model.net.init_args.{k}: checkpoint {a[k]} -> {b[k]}" for k in TRAINING_ONLY_NET_FIELDS
               if k in a and a[k] != b[k]]
    for key, value in model.hparams.items():
        if key != "net" and key in hp and _norm(hp[key]) != _norm(value):
            changed.append(f"model.{key}: checkpoint {hp[key]} -> {value}")
    if changed:
        say("resuming with the config's hyper-parameters where they differ from the checkpoint's: "
            + "; ".join(changed))


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def check_data_against_model(model, datamodule, data_config) -> None:
    """A data.* value that disagrees with model.net is an error naming both keys; when the shards'
    manifest agrees with the model, the data key is the culprit and the message says so."""
    if datamodule is None or not hasattr(model, "cfg"):
        return
    hp = getattr(datamodule, "hparams", {})
    init = "data.init_args" if isinstance(data_config, dict) or hasattr(data_config, "class_path") else "data"
    for data_key, net_key in DATA_KEYS:
        have, want = hp.get(data_key), getattr(model.cfg, net_key, None)
        if have is None or want is None or have == want or (data_key == "num_classes" and have < want):
            continue  # (a model may have more classes than the data uses, never fewer)
        manifest_value = _manifest_value(datamodule, data_key)
        if manifest_value == want:
            raise UserError(f"{init}.{data_key}={have} disagrees with model.net.init_args.{net_key}={want} and the "
                            f"shards ({want}): fix {init}.{data_key} (or write ${{model.net.init_args.{net_key}}})")
        raise UserError(f"model.net.init_args.{net_key}={want} but {init}.{data_key}={have}"
                        + (f" (shards: {manifest_value})" if manifest_value is not None else ""))


def _manifest_value(datamodule, data_key: str):
    if not hasattr(datamodule, "manifest"):
        return None
    try:
        m = datamodule.manifest("train")
    except Exception:
        return None  # the datamodule reports unreadable shards itself, with the shard named
    return getattr(m, data_key, None)


def run_dirs(trainer) -> dict:
    """Folders a fit writes: the run (logger) dir, checkpoint dirs; where SLURM hpc checkpoints may be."""
    run = None
    if trainer.loggers:
        log_dir = getattr(trainer.loggers[0], "log_dir", None)
        run = Path(log_dir) if log_dir else None
    base = run if run is not None else Path(trainer.default_root_dir)
    ckpt_dirs = []
    for cb in trainer.checkpoint_callbacks:
        ckpt_dirs.append(Path(cb.dirpath) if getattr(cb, "dirpath", None) else base / "checkpoints")
    hpc = [d for d in (run, *ckpt_dirs) if d is not None]
    root = Path(trainer.default_root_dir)
    if root.resolve() != Path.cwd().resolve():  # the cwd may hold other runs' hpc_ckpt files
        hpc.append(root)
    written = [d for d in (run, *ckpt_dirs) if d is not None]
    if trainer.fast_dev_run:
        written = []
    return {"run": run if run is not None else (ckpt_dirs[0].parent if ckpt_dirs else None),
            "checkpoints": ckpt_dirs, "hpc": hpc, "written": written}


def refuse_non_empty(folder: Path) -> None:
    if folder.is_dir() and any(p.name != ".lock" for p in folder.iterdir()):
        raise UserError(f"{folder} already holds a run: continue it with --ckpt_path last, or start a new run in "
                        "another folder (--trainer.logger.init_args.name NAME or .version V)")


def is_launch_rank_zero() -> bool:
    """Global rank 0 as known before the process group exists (torchrun: RANK; SLURM: SLURM_PROCID;
    Lightning's launcher and manual multi-node: NODE_RANK and LOCAL_RANK)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


class SaveConfigWithTensorBoard(SaveConfigCallback):
    """Saves the resolved config beside the logs (LightningCLI default) and also as TensorBoard text,
    so a run's panels say exactly what produced them."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # indented lines: TensorBoard renders text as Markdown, this keeps the YAML verbatim
                logger.experiment.add_text("config", "\n".join("    " + line for line in text.splitlines()))


def _quiet_known_warnings() -> None:
    # The EMA copy is kept in eval mode on purpose (it is the no-dropout reuse teacher).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def model_class_for(argv: list[str]):
    """ENATModule, or None (any LightningModule chosen by ``model.class_path``, e.g. the tokenizer trainer
    of experiments/tokenizers/*.yaml) when a config file or the command line gives ``model.class_path``."""
    import yaml

    args = list(argv)
    for i, arg in enumerate(args):
        if arg.startswith("--model.class_path") or arg.startswith("--model={") or (
                arg == "--model" and i + 1 < len(args) and "class_path" in args[i + 1]):
            return None
        path = args[i + 1] if arg in ("-c", "--config") and i + 1 < len(args) else (
            arg.split("=", 1)[1] if arg.startswith("--config=") else None)
        if path and Path(path).is_file():
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except yaml.YAMLError:
                continue  # jsonargparse reports the broken file with its own message
            model = (data.get("fit", data) if isinstance(data, dict) else {}).get("model") if isinstance(data, dict) else None
            if isinstance(model, dict) and "class_path" in model:
                return None
    return ENATModule


def run_lightning_cli(argv: list[str]) -> int:
    """Runs LightningCLI on argv (``["fit", "-c", "experiments/enat_s.yaml", ...]``) -> exit code."""
    _quiet_known_warnings()
    try:
        with warnings.catch_warnings():
            # We pass argv as args= on purpose (`enat fit ...` is a command of ours, so sys.argv also
            # holds it): LightningCLI's "args and sys.argv both given" warning does not apply.
            warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
            ENATLightningCLI(
                model_class_for(argv),  # None: any LightningModule by class_path (a tokenizer run)
                datamodule_class=None,  # any LightningDataModule, chosen by class_path in the YAML
                auto_configure_optimizers=False,
                # a resumed run writes its resolved config again into its own log dir
                save_config_callback=SaveConfigWithTensorBoard,
                save_config_kwargs={"overwrite": True},
                args=list(argv),
            )
    except SystemExit as e:  # jsonargparse reports config errors (with the key) and exits
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except NonFiniteLossError as e:
        raise UserError(str(e)) from e
    return 0
