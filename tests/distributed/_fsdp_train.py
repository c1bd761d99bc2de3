"""Trains a tiny ENAT with FSDP2 (Lightning's ModelParallelStrategy) on WORLD CPU processes (gloo).

Used by tests/distributed/test_fsdp.py (not collected by pytest):
    python tests/distributed/_fsdp_train.py OUT WORLD
WORLD=2: sharded; Lightning's launcher re-runs this script for rank 1. Fit A: 4 steps (2 epochs of 2
steps; split at an epoch end, max_epochs), a sharded checkpoint (a folder) per epoch, full weights saved at the end (A.pt). Fit B: resumes A's
step-2 checkpoint to step 4 (B.pt). WORLD=1: the same recipe unsharded (reference.pt).
"""
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule

CFG = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1,
                 embed_dropout=0.0)  # dropout draws are per process: off, so the runs are comparable
GLOBAL_BATCH = 16


class SaveFullWeights(pl.Callback):
    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if trainer.world_size > 1:  # gathers the shards (a collective: every rank calls it)
            sd = get_model_state_dict(pl_module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            sd = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if trainer.is_global_zero:
            torch.save({"state_dict": sd, "step": trainer.global_step}, self.path)


def fit(out: Path, world: int, name: str, ckpt_path=None, save_every: bool = False):
    pl.seed_everything(0, verbose=False)
    model = ENATModule(CFG, lr=3e-3, warmup_steps=0, ema_decay=0.5, reuse_prob=0.5)
    dm = SyntheticTokenDataModule(num_classes=4, codebook_size=32, grid=4, num_train=32, num_val=0,
                                  batch_size=GLOBAL_BATCH // world, shuffle=False)
    callbacks = [SaveFullWeights(out / f"{name}.pt")]
    if save_every:
        # at epoch ends: a mid-epoch resume restarts this (non-resumable) loader at the epoch start
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=out / "ckpt", every_n_epochs=1, save_top_k=-1))
    if world > 1:
        from enat_lightning.sharding import FSDP2Strategy  # what experiments/strategy/fsdp.yaml uses

        strategy = FSDP2Strategy()
    else:
        strategy = "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy=strategy, max_epochs=2, logger=False,
                         enable_checkpointing=bool(save_every), enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=callbacks,
                         default_root_dir=out)
    trainer.fit(model, dm, ckpt_path=ckpt_path)


def main(out: str, world: int) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    if world == 1:
        fit(out_dir, 1, "reference")
        return
    fit(out_dir, world, "A", save_every=True)
    fit(out_dir, world, "B", ckpt_path=str(out_dir / "ckpt" / "epoch=0-step=2.ckpt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
