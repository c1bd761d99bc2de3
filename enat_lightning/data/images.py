"""ImageDataModule: images in [0, 1] for training a tokenizer (``enat fit -c experiments/tokenizers/*.yaml``).

Sources (``train`` / ``val``):
  * ``demo`` / ``demo:digits`` -- the embedded demo digits (enat_lightning/demo/data.py: MNIST 32x32 or the
    scikit-learn digits 16x16); ``val`` defaults to the same held-out split the generator demo uses;
  * a folder of images (searched recursively; ADM centre crop to ``image_size``, as ``enat tokenize``), or
    an ImageFolder root. A folder ``val`` of the same kind is optional.
Batches are dicts ``{"images": (B, 3, H, W) float32 in [0, 1], "labels": (B,) int64}``; ``random_flip``
mirrors training images at random (off for digits).
"""
from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from enat_lightning.errors import UserError
from enat_lightning.seeding import mix_seed

from .tokenize import IMG_EXTENSIONS, load_image


class _Files(Dataset):
    def __init__(self, files: list[Path], image_size: int):
        self.files, self.image_size = files, image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return load_image(self.files[i], self.image_size), torch.tensor(0)


def image_files(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise UserError(f"{root} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return files


def demo_split(spec: str, split: str) -> TensorDataset:
    """``demo`` / ``demo:digits`` -> the demo data set's train or held-out images with labels."""
    from enat_lightning.image_sets import IMAGE_SETS  # the demo registers its digits there from above

    prefix, _, name = spec.partition(":")
    if prefix not in IMAGE_SETS:
        raise UserError(f"image set {spec!r}: no data set {prefix!r} is registered (import enat_lightning.demo."
                        f"classifier, as `enat` does, to register the demo digits)")
    images, labels, is_val = IMAGE_SETS[prefix](name or "mnist")
    keep = is_val if split == "val" else ~is_val
    return TensorDataset(images[keep], labels[keep])


class ImageDataModule(pl.LightningDataModule):
    """Args:
        train: 'demo', 'demo:digits' or an image folder.
        val: the same kinds; None with a demo ``train`` = its held-out split; None otherwise = no validation.
        image_size: side of the (square) training images; folders are centre-cropped to it, the demo
            images must already have it (MNIST 32, digits 16).
        batch_size, val_batch_size: per rank; num_workers: DataLoader workers.
        random_flip: mirror training images with probability 1/2.
        max_val_images: validate on the first N validation images only (None = all).
    """

    # A resumed run draws a fresh order (``_order_seed``), so Lightning's mid-epoch resume warning does not apply
    # (read by ``quiet.quiet_resume_warnings``).
    reshuffles_on_resume = True

    def __init__(self, train: str = "demo", val: str | None = None, image_size: int = 32, batch_size: int = 64,
                 val_batch_size: int | None = None, num_workers: int = 0, random_flip: bool = False,
                 max_val_images: int | None = None, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1:
            raise ValueError(f"data.init_args.batch_size must be >= 1, got {batch_size}")
        self._sets: dict[str, Dataset] = {}

    def _dataset(self, split: str) -> Dataset | None:
        hp = self.hparams
        spec = hp.train if split == "train" else (hp.val if hp.val is not None else
                                                  hp.train if str(hp.train).startswith("demo") else None)
        if spec is None:
            return None
        if split not in self._sets:
            if str(spec).startswith("demo"):
                ds = demo_split(str(spec), split)
                side = ds.tensors[0].shape[-1]
                if side != hp.image_size:
                    raise UserError(f"data.init_args.image_size={hp.image_size} but the {spec} images are "
                                    f"{side}x{side}")
            else:
                ds = _Files(image_files(spec), hp.image_size)
            if split == "val" and hp.max_val_images:
                ds = torch.utils.data.Subset(ds, range(min(hp.max_val_images, len(ds))))
            self._sets[split] = ds
        return self._sets[split]

    def setup(self, stage: str | None = None) -> None:
        self._dataset("train")
        self._dataset("val")

    def _order_seed(self) -> int:
        """The seed of the shuffle and the flips: ``seed`` for a fresh run; on resume mixed with the restored
        global step. Lightning restarts a map-style loader from its start on resume, so with ``seed`` alone a
        resumed run would start again on the run's first permutation (resumed in the first epoch at step s: the
        s batches it already trained on, while the rest of the epoch goes unseen)."""
        trainer = getattr(self, "trainer", None)
        step = int(getattr(trainer, "global_step", 0) or 0)
        return self.hparams.seed if step == 0 else mix_seed(self.hparams.seed, step)

    def _collate(self, train: bool):
        flip = self.hparams.random_flip and train
        gen = torch.Generator().manual_seed(self._order_seed() if train else self.hparams.seed)

        def collate(items):
            images = torch.stack([x for x, _ in items])
            if flip:
                mask = torch.rand(len(images), generator=gen) < 0.5
                images = torch.where(mask[:, None, None, None], images.flip(-1), images)
            return {"images": images, "labels": torch.stack([torch.as_tensor(y) for _, y in items])}
        return collate

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("train"), batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers, collate_fn=self._collate(True),
                          generator=torch.Generator().manual_seed(self._order_seed()),
                          persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self):
        ds = self._dataset("val")
        if ds is None:
            return []
        return DataLoader(ds, batch_size=self.hparams.val_batch_size or self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=self._collate(False))
