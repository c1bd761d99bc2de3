"""Checkpoints that survive kills, interrupts and pre-emption (Lightning glue; installed by ``enat fit``).

- ``AtomicCheckpointIO``: every checkpoint is written to a temporary file BESIDE its final name,
  fsynced and renamed (``fileio.atomic_writer``), so a kill mid-save never leaves a truncated
  ``last.ckpt`` and no temporary file lands in /tmp (Lightning's default moves a temp file across
  filesystems, which is a copy). A ``<file>.sha256`` sidecar is written with it, checked at load and
  removed with it.
- ``checkpoint_problem`` / ``newest_valid_checkpoint``: what ``--ckpt_path last`` resumes from: the
  valid checkpoint with the highest global step among ``last*.ckpt``, periodic ``*.ckpt`` and SLURM's
  ``hpc_ckpt_N.ckpt``; truncated, corrupted or empty files are skipped with a message.
- ``RunCheckpoints``: saves ``last.ckpt`` at the end of training (also when ``max_steps`` is not a
  multiple of ``every_n_train_steps``), on Ctrl-C (SIGINT) and on SLURM's pre-emption signal
  (SIGUSR1: save, ``scontrol requeue``, stop), always at a step boundary.
- ``RunDirLock``: one writer per run directory (O_EXCL lock file holding the PID; a lock whose
  process is gone is stale and taken over).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from enat_lightning.sampling.checkpoint import read_torch_file
from enat_lightning.errors import UserError
from enat_lightning.fileio import (ChecksumMismatchError, OutputLock, atomic_writer, checksum_path, verify_integrity,
                                   write_checksum)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into ``.<name>.XXXX.tmp`` in the target's folder -> fsync -> rename -> checksum sidecar."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        try:
            with atomic_writer(path) as tmp:
                torch.save(checkpoint, tmp)
            write_checksum(path)
        except OSError as e:  # disk full, read-only folder, quota: name the file, say what was kept
            raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous {path.name} (if any) "
                            f"is untouched. Free space in {path.parent} (or point the run elsewhere) and resume "
                            "with --ckpt_path last") from e

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        problem = checkpoint_problem(path, deep=False)  # checksum + readable; the full load follows
        if problem:
            raise UserError(f"cannot resume from {path}: {problem}")
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        checksum_path(path).unlink(missing_ok=True)


# -- which checkpoint to resume from ------------------------------------------------------------------------
def checkpoint_problem(path, deep: bool = True) -> str | None:
    """None if ``path`` is a loadable training checkpoint, else why not (one phrase, for messages).

    Checks: exists and non-empty, matches its ``.sha256`` sidecar when there is one, and (``deep``)
    ``read_torch_file(path, mmap=True)`` (safe: weights only) reads it as a dict with a state_dict and a global
    step (mmap: the tensors are not read, so a multi-GB file costs little)."""
    path = Path(path)
    if not path.is_file():
        return "file not found"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        verify_integrity(path)  # the .sha256 sidecar, else the CRC-32 inside the zip
    except ChecksumMismatchError as e:
        if checksum_path(path).is_file():
            return f"its bytes differ from the sha256 recorded at save time ({checksum_path(path).name}): corrupted"
        return str(e).split(" is ", 1)[-1].removeprefix("corrupted: ") + ": corrupted"
    if not deep:
        return None
    try:
        ckpt = read_torch_file(path, mmap=True)
    except Exception as e:  # truncated zip, random bytes, pickle payloads refused by weights_only
        cause = e.__cause__ or e
        return f"unreadable ({type(cause).__name__}: {str(cause).splitlines()[0][:160]}); truncated by a kill or not a checkpoint"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "not a Lightning training checkpoint (no state_dict / global_step)"
    return None


def _step_of(path: Path) -> int:
    return int(read_torch_file(path, mmap=True)["global_step"])


def resume_candidates(checkpoint_dirs, hpc_dirs=()) -> list[Path]:
    """Every ``*.ckpt`` in the checkpoint folders and every ``hpc_ckpt_*.ckpt`` in ``hpc_dirs``."""
    found: dict[Path, None] = {}
    for d in checkpoint_dirs:
        if d and Path(d).is_dir():
            found.update(dict.fromkeys(sorted(Path(d).glob("*.ckpt"))))
    for d in hpc_dirs:
        if d and Path(d).is_dir():
            found.update(dict.fromkeys(sorted(Path(d).glob("hpc_ckpt_*.ckpt"))))
    return [p.resolve() for p in found]


def newest_valid_checkpoint(candidates, log=rank_zero_warn) -> Path | None:
    """The valid candidate with the highest global step (ties: the most recently written); invalid
    ones are reported through ``log`` and skipped."""
    best, best_key = None, None
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem:
            log(f"skipping checkpoint {path}: {problem}")
            continue
        key = (_step_of(path), path.stat().st_mtime)
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


# -- end of training, Ctrl-C and pre-emption ------------------------------------------------------------------
class RunCheckpoints(pl.Callback):
    """Saves ``last.ckpt`` whenever training stops: at the end, on SIGINT (Ctrl-C) and on the SLURM
    pre-emption signal (SIGUSR1, sent ``--signal=SIGUSR1@90`` seconds before the time limit, or the
    ``requeue_signal`` of the SLURMEnvironment plugin).

    Signals only raise a flag; the checkpoint is written at the next step boundary, so it never holds
    a half-applied update. All ranks agree on the flag (an all-reduce every ``sync_every`` steps when
    there are several processes; a single process checks every step without any collective). On
    SIGUSR1 rank 0 then runs ``scontrol requeue $SLURM_JOB_ID`` (when the trainer's cluster environment
    is ``SLURMEnvironment(auto_requeue=True)``, e.g. experiments/cluster/slurm.yaml) and training stops; the requeued job
    runs the same command with ``--ckpt_path last`` and continues from that step. A second Ctrl-C
    aborts at once (Lightning's KeyboardInterrupt path; the last complete checkpoint stays).

    It replaces Lightning's own SLURM handler (which saves ``hpc_ckpt_N.ckpt`` from inside the signal
    handler, i.e. possibly in the middle of a step): Lightning installs that handler only when SIGUSR1
    has none, and this callback installs its handler first (in ``setup``).
    """

    def __init__(self, sync_every: int = 10):
        self.sync_every = max(1, sync_every)
        self.requested: str | None = None  # "interrupt" | "preempt"
        self.stopped_by: str | None = None
        self._previous: dict[int, object] = {}
        self.auto_requeue = False

    # signals -> flags
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        self.requested = self.stopped_by = None
        # single-device strategies keep no cluster environment: ask the connector, as Lightning's own handler does
        env = getattr(trainer.strategy, "cluster_environment", None) or \
            getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
        self.auto_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        preempt = (env.requeue_signal if isinstance(env, SLURMEnvironment) else None) or signal.SIGUSR1
        handlers = {signal.SIGTERM: self._on_sigterm, signal.SIGINT: self._on_sigint, preempt: self._on_sigusr1}
        for signum, handler in handlers.items():
            self._previous[signum] = signal.signal(signum, handler)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = "interrupt"
        print("\nCtrl-C: saving last.ckpt after the current step, then stopping (Ctrl-C again to abort now)",
              flush=True)

    def _on_sigterm(self, signum, frame) -> None:
        # Clusters and container runtimes send SIGTERM some seconds before SIGKILL: save, then exit non-zero.
        self.requested = "terminate"
        print("\nSIGTERM: saving last.ckpt after the current step, then stopping", flush=True)

    def _on_sigusr1(self, signum, frame) -> None:
        self.requested = "preempt"
        rank_zero_info("SIGUSR1 (pre-emption): saving last.ckpt after the current step, then requeueing")

    # flags -> checkpoint at a step boundary
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size > 1:
            if trainer.global_step % self.sync_every:
                return
            codes = {None: 0, "interrupt": 1, "terminate": 2, "preempt": 3}
            flag = torch.tensor(codes[self.requested], device=pl_module.device)
            flag = int(trainer.strategy.reduce(flag, reduce_op="max"))
            self.requested = {v: k for k, v in codes.items()}[flag]
        if not self.requested:
            return
        self.stopped_by, self.requested = self.requested, None
        save_last(trainer)
        if self.stopped_by == "preempt" and self.auto_requeue and trainer.is_global_zero:
            requeue()
        trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        save_last(trainer)  # no-op when the last checkpoint already holds this step


def save_last(trainer: pl.Trainer) -> list[Path]:
    """Writes ``last.ckpt`` of every ModelCheckpoint with ``save_last`` unless it already holds the
    current step. Returns the paths written."""
    written = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint) or not cb.save_last or cb.dirpath is None:
            continue
        path = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        if cb.last_model_path and Path(cb.last_model_path) == path and path.is_file() \
                and getattr(cb, "_last_global_step_saved", -1) == trainer.global_step:
            continue
        trainer.save_checkpoint(path, weights_only=False)  # a resumable checkpoint: optimizer and loop state too
        cb.last_model_path = str(path)
        cb._last_global_step_saved = trainer.global_step  # ModelCheckpoint skips a second save of this step
        written.append(path)
    return written


def requeue() -> int:
    """``scontrol requeue <job>`` for this SLURM job (array jobs: ``<array job>_<task>``)."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")
    if not job:
        rank_zero_warn("SIGUSR1 outside a SLURM job (no SLURM_JOB_ID): saved last.ckpt, not requeueing")
        return 1
    rc = subprocess.call(["scontrol", "requeue", job])
    (rank_zero_info if rc == 0 else rank_zero_warn)(f"scontrol requeue {job}: exit code {rc}")
    return rc


# -- one writer per run directory -------------------------------------------------------------------------------
class RunDirLock(OutputLock):
    """``<run dir>/.lock``: the one output lock of the package (``fileio.OutputLock``) on a training run."""

    def __init__(self, run_dir):
        super().__init__(Path(run_dir) / ".lock", what=str(run_dir), holder="training run",
                         hint="wait for it to finish, or pick another run directory (--trainer.logger.init_args.name)")
