"""``enat fit|validate|test`` and ``lightning fit``: LightningCLI over ENATModule.

Configs: ``model:`` holds ENATModule's arguments (``model.net`` with ``class_path`` ENATConfig or
NATConfig and its fields as ``init_args``); ``data:`` any LightningDataModule by class_path;
``trainer:`` the Trainer. Several ``-c`` files compose, later ones overriding earlier ones. The parser
runs in omegaconf+ mode: ``${model.net.init_args.width}`` anywhere refers to the final, composed
value (after every ``-c`` file and command-line override). The data module is given ``grid``,
``codebook_size`` and ``num_classes`` by the network (``link_arguments``): the data section never
repeats them, and the data module checks its shards against them where the data enters.
Parsing and instantiation happen before any training: an unknown key or wrong type exits with
jsonargparse's message naming the key; a bad value raises InvalidInput naming the YAML key (one line,
also when jsonargparse wraps it, e.g. for a callback in ``trainer.callbacks``). A data section or flag
that sets a linked value to another value than the network's is refused (``check_linked_data_values``).

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
import sys
import warnings
from pathlib import Path

import jsonargparse
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import enat_lightning.demo.classifier  # noqa: F401  registers feature: demo / ref_stats: demo:SPLIT (FID callback)
from enat_lightning.checkpointing import (AtomicCheckpointIO, RunCheckpoints, RunDirLock, checkpoint_problem,
                                          newest_valid_checkpoint, resume_candidates)
from enat_lightning.errors import InvalidInput, UserError
from enat_lightning.fileio import is_launch_rank_zero
from enat_lightning.models import config_from_dict
from enat_lightning.module import ENATModule, NonFiniteLossError, upgrade_checkpoint
from enat_lightning.quiet import quiet_known_warnings, quiet_resume_warnings
from enat_lightning.sampling.checkpoint import read_torch_file

# omegaconf+: interpolations resolve on the composed config. Absolute paths (``${model.net.init_args.grid}``)
# are rewritten relative to the node, so they resolve inside the subcommand (fit/validate/test).
PARSER_KWARGS = {"parser_mode": "omegaconf+"}
jsonargparse.set_parsing_settings(omegaconf_absolute_to_relative_paths=True)

# Fields of a network config that change training only, not the weights: the config may change them on resume.
TRAINING_ONLY_NET_FIELDS = ("class_dropout_prob", "embed_dropout")
# Network fields the data module is given (same names on both sides; see add_arguments_to_parser).
DATA_LINKS = ("grid", "codebook_size", "num_classes")


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

    def add_arguments_to_parser(self, parser) -> None:
        # The token grid side, the codebook size and the class count are the network's: the data module
        # receives them from model.net once (LightningCLI's own way to tie two sections) and checks its
        # shards against them where the data enters (TokenShardDataModule.setup).
        for key in DATA_LINKS:
            parser.link_arguments(f"model.net.init_args.{key}", f"data.init_args.{key}")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        check_linked_data_values(self.config[sub] if sub else self.config, args)
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
            config = self.config_init[self.subcommand] if self.subcommand else self.config_init
            plugins = config["trainer"].get("plugins") or []
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
        ckpt = self.resolve_ckpt(model, dirs)
        if ckpt is None and self.ckpt_request != "last":
            for d in dirs["written"]:
                refuse_non_empty(d)
        if ckpt is not None:  # resuming: the run's own folder is not empty, and our loaders draw a fresh order
            quiet_resume_warnings(bool(getattr(self.datamodule, "reshuffles_on_resume", False)))
        lock = RunDirLock(dirs["run"]) if dirs["run"] and is_launch_rank_zero() else None
        if lock:
            lock.acquire()
        terminated = False
        try:
            trainer.fit(model, ckpt_path=str(ckpt) if ckpt else None, **kwargs)
        except SIGTERMException:  # Lightning's own SIGTERM exit (a SystemExit with code None, i.e. 0)
            terminated = True
        finally:
            if lock:
                lock.release()
        stopped = getattr(self.run_checkpoints, "stopped_by", None)
        if terminated and stopped != "terminate":
            say(f"terminated (SIGTERM) at step {trainer.global_step} before last.ckpt could be saved; continue "
                f"with --ckpt_path last from the newest checkpoint")
            raise SystemExit(143)
        if stopped == "interrupt":
            say(f"interrupted at step {trainer.global_step}; last.ckpt saved. Continue with --ckpt_path last")
            raise SystemExit(130)
        if stopped == "terminate":
            say(f"terminated (SIGTERM) at step {trainer.global_step}; last.ckpt saved. Continue with --ckpt_path last")
            raise SystemExit(143)  # 128 + SIGTERM: the job did not finish
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
        if self.ckpt_request is None:  # metrics of random weights, reported as if they meant something
            raise UserError(f"enat {self.subcommand} needs --ckpt_path FILE (or --ckpt_path last): without a "
                            f"checkpoint it would score untrained, randomly initialised weights")
        ckpt = self.resolve_ckpt(model, run_dirs(self.trainer))
        if ckpt is None:
            raise UserError(f"enat {self.subcommand} --ckpt_path {self.ckpt_request}: no valid checkpoint found, "
                            f"so only untrained weights could be scored; train first (enat fit) or name a file")
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
    ckpt = read_torch_file(path, mmap=True)
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


def _given_data_values(args) -> dict:
    """``data.init_args.{grid,codebook_size,num_classes}`` as the user wrote them (the -c files in order, then
    the flags), interpolations left out. jsonargparse's link overwrites them silently, so they are read here."""
    from enat_lightning.config_files import config_files, read_config_file

    args = [str(a) for a in (args or [])]
    given: dict = {}
    for path in config_files(args):
        data = read_config_file(path)
        data = data.get("fit", data) if isinstance(data.get("fit"), dict) else data
        init = ((data.get("data") or {}) if isinstance(data.get("data"), dict) else {}).get("init_args")
        if isinstance(init, dict):
            given.update({k: init[k] for k in DATA_LINKS if k in init})
    for i, arg in enumerate(args):
        for key in DATA_LINKS:
            flag = f"--data.init_args.{key}"
            if arg == flag and i + 1 < len(args):
                given[key] = args[i + 1]
            elif arg.startswith(flag + "="):
                given[key] = arg.split("=", 1)[1]
    return {k: v for k, v in given.items() if not (isinstance(v, str) and v.strip().startswith("${"))}


def check_linked_data_values(config, args) -> None:
    """The data module is given grid / codebook_size / num_classes by model.net (link_arguments). A data
    section or flag that sets one of them to another value than the network's is refused, naming both keys
    (the link would otherwise drop the user's value without a word)."""
    try:
        net = config["model"]["net"]["init_args"]
    except (KeyError, TypeError):
        return  # not an ENAT model config (e.g. a tokenizer run): nothing is linked
    for key, value in _given_data_values(args).items():
        ours = net.get(key) if hasattr(net, "get") else None
        if ours is None:
            continue
        try:
            same = int(value) == int(ours)
        except (TypeError, ValueError):
            same = False
        if not same:
            raise InvalidInput(f"model.net.init_args.{key}={ours} but data.init_args.{key}={value}: the data "
                               f"module is given {key} by the network (linked); drop data.init_args.{key} and "
                               f"set model.net.init_args.{key} if the data needs another value")


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


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


class SaveConfigWithTensorBoard(SaveConfigCallback):
    """Saves the resolved config beside the logs (LightningCLI default) and also as TensorBoard text,
    so a run's panels say exactly what produced them."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # indented lines: TensorBoard renders text as Markdown, this keeps the YAML verbatim
                logger.experiment.add_text("config", "\n".join("    " + line for line in text.splitlines()))


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
    from enat_lightning.config_files import config_files, read_config_file

    for path in config_files(argv):
        read_config_file(path)  # missing, empty or not a mapping: one line naming the file, not a usage dump
    quiet_known_warnings()
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
                # only fit writes its config (validate/test never write into a training run's files)
                save_config_callback=SaveConfigWithTensorBoard if argv[:1] == ["fit"] else None,
                save_config_kwargs={"overwrite": True},
                args=list(argv),
            )
    except SystemExit as e:  # jsonargparse reports config errors (with the key) and exits
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except NonFiniteLossError as e:
        raise UserError(str(e)) from e
    except (ValueError, TypeError) as e:
        # jsonargparse wraps an error raised while a class is instantiated (a callback in trainer.callbacks:
        # "Does not validate against any of the Union subtypes ...") and chains the original: a UserError
        # raised where the input is checked stays the one line naming the key.
        user = user_error_in_chain(e)
        if user is None or user is e:
            raise
        raise user from e
    return 0


def user_error_in_chain(e: BaseException) -> UserError | None:
    """The first UserError among ``e``'s causes and contexts (``e`` itself included), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, UserError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
