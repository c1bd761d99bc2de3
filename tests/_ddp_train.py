"""Trains a tiny ENAT for a few steps on 1 or 2 CPU processes and saves each rank's weights.

Used by tests/test_module.py (not collected by pytest):
    python tests/_ddp_train.py OUT_DIR WORLD_SIZE GLOBAL_BATCH [NODES]
With WORLD_SIZE=2 Lightning's "ddp" launcher re-runs this script for rank 1 (gloo backend). With NODES=2
(a simulated 2-node job, one process per node) the caller starts this script once per node with
MASTER_ADDR / MASTER_PORT / NODE_RANK / WORLD_SIZE / LOCAL_RANK=0 set, as a multi-node launcher would.
Each rank also records which samples it read (per epoch) and the reuse coin of every step.
"""
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule


class Indexed(torch.utils.data.Dataset):
    """Adds each sample's index to its dict (the training step ignores extra keys)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return {**self.base[i], "index": i}


class SaveWeights(pl.Callback):
    def __init__(self, out: Path):
        self.out = out
        self.read: list[tuple[int, list[int]]] = []  # (epoch, sample indices of the batch)
        self.reuse: list[float] = []  # the reuse coin of every step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.read.append((trainer.current_epoch, batch["index"].tolist()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.reuse.append(float(trainer.callback_metrics["train/reuse"]))

    def on_train_end(self, trainer, pl_module):
        sd = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state_dict": sd, "world": trainer.world_size, "step": trainer.global_step, "read": self.read,
                    "reuse": self.reuse}, self.out / f"rank{trainer.global_rank}_of{trainer.world_size}.pt")


def main(out: str, world: int, global_batch: int, nodes: int = 1, max_steps: int = 6, num_workers: int = 0) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    pl.seed_everything(0, verbose=False)
    cfg = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1,
                     embed_dropout=0.0)  # dropout draws are per process: off, so both runs are comparable
    model = ENATModule(cfg, lr=3e-3, warmup_steps=0, ema_decay=0.5, reuse_prob=0.5)
    dm = SyntheticTokenDataModule(num_classes=4, codebook_size=32, grid=4, num_train=96, num_val=0,
                                  batch_size=global_batch // world, shuffle=False, num_workers=num_workers)
    dm.train_set = Indexed(dm.train_set)
    trainer = pl.Trainer(accelerator="cpu", devices=world // nodes, num_nodes=nodes,
                         strategy="ddp" if world > 1 else "auto", max_steps=max_steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[SaveWeights(out_dir)])
    trainer.fit(model, dm)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
