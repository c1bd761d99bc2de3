"""Trains a tiny ENAT for a few steps on 1 or 2 CPU processes and saves each rank's weights.

Used by tests/test_module.py (not collected by pytest):
    python tests/_ddp_train.py OUT_DIR WORLD_SIZE GLOBAL_BATCH
With WORLD_SIZE=2 Lightning's "ddp" launcher re-runs this script for rank 1 (gloo backend).
"""
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule


class SaveWeights(pl.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        sd = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state_dict": sd, "world": trainer.world_size, "step": trainer.global_step},
                   self.out / f"rank{trainer.global_rank}_of{trainer.world_size}.pt")


def main(out: str, world: int, global_batch: int) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    pl.seed_everything(0, verbose=False)
    cfg = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1,
                     embed_dropout=0.0)  # dropout draws are per process: off, so both runs are comparable
    model = ENATModule(cfg, lr=3e-3, warmup_steps=0, ema_decay=0.5, reuse_prob=0.5)
    dm = SyntheticTokenDataModule(num_classes=4, codebook_size=32, grid=4, num_train=96, num_val=0,
                                  batch_size=global_batch // world, shuffle=False)
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", max_steps=6,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[SaveWeights(out_dir)])
    trainer.fit(model, dm)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
