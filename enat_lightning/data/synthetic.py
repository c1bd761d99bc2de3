"""SyntheticTokenDataModule: learnable class-conditional token grids held in memory.

For tests, smoke runs and benchmarks: each class has a fixed random prototype grid; a sample is its
class prototype with a share ``noise`` of positions replaced by random codes. A network that reads
the label and the visible tokens can push the masked-token loss far below log(V).
Batches follow the training contract: {"tokens": int64 (B, L), "label": int64 (B,)}.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class _TokenDataset(Dataset):
    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor):
        self.tokens, self.labels = tokens, labels  # (N, L), (N,)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "label": self.labels[i]}


class EpochShuffleSampler(Sampler[int]):
    """A permutation that depends only on (seed, epoch): resuming at an epoch boundary reshuffles
    exactly as an uninterrupted run (Lightning calls ``set_epoch``)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def make_tokens(num_samples: int, num_classes: int, codebook_size: int, grid: int, noise: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) int64 tokens and (N,) int64 labels (balanced classes), fixed by ``seed``."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise}")
    g = torch.Generator().manual_seed(seed)
    L = grid * grid
    prototypes = torch.randint(codebook_size, (num_classes, L), generator=g)  # (K, L)
    labels = torch.arange(num_samples) % num_classes  # (N,)
    tokens = prototypes[labels].clone()  # (N, L)
    swap = torch.rand(num_samples, L, generator=g) < noise
    tokens[swap] = torch.randint(codebook_size, (int(swap.sum()),), generator=g)
    return tokens, labels


class SyntheticTokenDataModule(pl.LightningDataModule):
    def __init__(self, num_classes: int = 10, codebook_size: int = 64, grid: int = 4, num_train: int = 512,
                 num_val: int = 64, batch_size: int = 32, noise: float = 0.1, shuffle: bool = True, seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.grid, self.num_classes, self.codebook_size = grid, num_classes, codebook_size
        self.batch_size, self.shuffle, self.seed, self.num_workers = batch_size, shuffle, seed, num_workers
        tokens, labels = make_tokens(num_train + num_val, num_classes, codebook_size, grid, noise, seed)
        self.train_set = _TokenDataset(tokens[:num_train], labels[:num_train])
        self.val_set = _TokenDataset(tokens[num_train:], labels[num_train:])

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Rank r takes samples r, r + world, ... (unshuffled): the rows ENATModule's sharded
            # draws assume, so N processes see exactly one process's global batch.
            sampler = DistributedSampler(self.train_set, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                         shuffle=self.shuffle, seed=self.seed, drop_last=True)
        else:
            sampler = EpochShuffleSampler(len(self.train_set), self.seed) if self.shuffle else None
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
