import warnings

import pytest
import torch
from shard_helpers import sample_index
from test_reader import _poison

from enat_lightning.data.datamodule import TokenShardDataModule
from enat_lightning.demo.data import ensure_demo_data, load_digit_images
from enat_lightning.data.format import BadDataError
from enat_lightning.tokenizers.demo import DemoTokenizer


def test_demo_round_trip_batches_equal_tokens():
    """digits -> demo tokenizer -> shards -> DataModule batches give back the same ids and labels."""
    paths = ensure_demo_data(dataset="digits")
    tok = DemoTokenizer.load(paths.tokenizer)
    images, labels, is_val = load_digit_images()
    want = tok.encode(images[is_val]).reshape(-1, 16)  # (N, L)
    dm = TokenShardDataModule(str(paths.train), str(paths.val), batch_size=64, num_workers=0,
                              codebook_size=128, grid=4, num_classes=10)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    got = torch.cat([b["tokens"] for b in batches])
    assert torch.equal(got, want) and torch.equal(torch.cat([b["label"] for b in batches]), labels[is_val])
    train = next(iter(dm.train_dataloader()))
    assert train["tokens"].shape == (64, 16) and int(train["tokens"].max()) < 128


@pytest.mark.parametrize("kw, msg", [
    (dict(grid=8), r"grid 4x4 in .*manifest.json vs model 8x8 \(model.net.init_args.grid\)"),
    (dict(codebook_size=1024), r"codebook 16 in .*manifest.json vs model 1024"),
    (dict(num_classes=3), r"5 classes in .*manifest.json vs model 3"),
])
def test_manifest_mismatch_refused(shard_set, kw, msg):
    out, _ = shard_set
    dm = TokenShardDataModule(str(out), batch_size=4, num_workers=0, **kw)
    with pytest.raises(ValueError, match=msg):
        dm.setup("fit")


def test_more_model_classes_than_data_classes_is_fine(shard_set):
    out, _ = shard_set
    dm = TokenShardDataModule(str(out), str(out), batch_size=4, num_workers=0, grid=4, num_classes=1000)
    dm.setup("fit")
    with pytest.raises(ValueError, match="vs model 32x32"):
        dm.check_compatible(16, 32, 5)


def test_two_ranks_two_workers_val_exactly_once(shard_set):
    out, samples = shard_set
    seen = []
    for rank in (0, 1):
        dm = TokenShardDataModule(str(out), str(out), batch_size=3, num_workers=2, rank=rank, world_size=2)
        dm.setup("validate")
        loader = dm.val_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader)
        seen += [sample_index(r) for b in batches for r in b["tokens"]]
    assert sorted(seen) == list(range(len(samples)))


def test_epochs_and_ranks_differ_batches_per_epoch_fixed(shard_set):
    out, _ = shard_set
    dm = TokenShardDataModule(str(out), batch_size=4, num_workers=0, batches_per_epoch=3, seed=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    e0, e1 = [torch.cat([b["tokens"] for b in loader]) for _ in range(2)]
    assert e0.shape == e1.shape == (12, 16) and not torch.equal(e0, e1)
    again = TokenShardDataModule(str(out), batch_size=4, num_workers=0, batches_per_epoch=3, seed=5)
    again.setup("fit")
    assert torch.equal(torch.cat(list(b["tokens"] for b in again.train_dataloader())), e0)
    r1 = TokenShardDataModule(str(out), batch_size=4, num_workers=0, batches_per_epoch=3, seed=5, rank=1,
                              world_size=2)
    r1.setup("fit")
    assert not torch.equal(torch.cat([b["tokens"] for b in r1.train_dataloader()]), e0)
    # default: samples / (batch * world), rounded up
    d = TokenShardDataModule(str(out), batch_size=4, num_workers=0, rank=0, world_size=2)
    d.setup("fit")
    assert len(d.train_dataloader()) == 7  # ceil(50 / 8)


def test_bad_sample_error_or_skip_counter(shard_set):
    out, samples = shard_set
    _poison(out, 3)
    dm = TokenShardDataModule(str(out), str(out), batch_size=5, num_workers=0)
    dm.setup("validate")
    with pytest.raises(BadDataError, match=r"shard-000000\.tar, sample 'k000003'"):
        list(dm.val_dataloader())
    dm = TokenShardDataModule(str(out), str(out), batch_size=5, num_workers=2, skip_bad_samples=True)
    dm.setup("validate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(len(b["label"]) for b in dm.val_dataloader())
    assert n == len(samples) - 1 and dm.skipped_samples == 1


def test_rank_from_env_and_resume_step_reseeds(shard_set, monkeypatch):
    from types import SimpleNamespace

    out, _ = shard_set

    def first_epoch(**kw):
        dm = TokenShardDataModule(str(out), batch_size=4, num_workers=0, batches_per_epoch=3, **kw)
        dm.setup("fit")
        return dm

    base = torch.cat([b["tokens"] for b in first_epoch().train_dataloader()])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dm = first_epoch()
    assert dm.train_dataset().cfg.rank == 1 and dm.train_dataset().cfg.world_size == 2
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    resumed = first_epoch()
    resumed.trainer = SimpleNamespace(global_step=1500, global_rank=0, world_size=1)  # as after ckpt restore
    ds = resumed.train_dataset()
    assert ds.start_step == 1500
    assert not torch.equal(torch.cat([b["tokens"] for b in resumed.train_dataloader()]), base)
