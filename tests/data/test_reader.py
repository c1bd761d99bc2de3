import warnings

import pytest
import torch
from shard_helpers import CODEBOOK, make_samples, sample_index, write_set
from torch.utils.data import DataLoader

from enat_lightning.data.format import BadDataError
from enat_lightning.data.reader import (SkipCounter, StreamConfig, TrainStream, ValStream, iter_shard,
                                        resolve_manifest, split_range)


def _val_indices(out, rank, world, workers, batch_size=3):
    m, urls, _ = resolve_manifest(str(out))
    ds = ValStream(m, urls, StreamConfig(batch_size=batch_size, rank=rank, world_size=world, num_workers=workers))
    batches = list(DataLoader(ds, batch_size=None, num_workers=workers))
    assert len(batches) == len(ds)
    return [sample_index(row) for b in batches for row in b["tokens"]]


def test_val_two_ranks_two_workers_cover_every_sample_once(shard_set):
    out, samples = shard_set
    seen = _val_indices(out, 0, 2, 2) + _val_indices(out, 1, 2, 2)
    assert sorted(seen) == list(range(len(samples)))
    # ranks get near-equal shares
    assert abs(len(_val_indices(out, 0, 2, 2)) - len(_val_indices(out, 1, 2, 2))) <= 1


def test_split_range_partitions():
    assert [split_range(10, 3, i) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]


def _train(out, **kw):
    m, urls, _ = resolve_manifest(str(out))
    cfg = StreamConfig(batch_size=4, seed=kw.pop("seed", 0), rank=kw.pop("rank", 0), world_size=kw.pop("world", 1))
    return TrainStream(m, urls, cfg, batches_per_epoch=kw.pop("bpe", 5), shuffle_buffer=10, **kw)


def _tokens(ds, workers=0):
    return torch.cat([b["tokens"] for b in DataLoader(ds, batch_size=None, num_workers=workers)])


def test_train_is_deterministic_and_reseeded(shard_set):
    out, _ = shard_set
    a, b = _tokens(_train(out)), _tokens(_train(out))
    assert a.shape == (20, 16) and torch.equal(a, b)
    ds = _train(out)
    ds.set_epoch(1)
    assert not torch.equal(a, _tokens(ds))  # a new epoch draws a new order
    assert not torch.equal(a, _tokens(_train(out, start_step=100)))  # a resumed run too
    assert not torch.equal(a, _tokens(_train(out, seed=1)))


def test_train_exact_batch_count_per_rank_with_workers(shard_set):
    out, _ = shard_set
    for rank in (0, 1):
        ds = _train(out, rank=rank, world=2, bpe=7)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(batches) == len(ds) == 7
        assert all(b["tokens"].shape == (4, 16) and b["tokens"].dtype == torch.int64 for b in batches)
        assert all(b["label"].dtype == torch.int64 and b["label"].shape == (4,) for b in batches)


def test_train_more_workers_than_batches(shard_set):
    out, _ = shard_set
    ds = _train(out, bpe=1)
    assert len(list(DataLoader(ds, batch_size=None, num_workers=2))) == len(ds) == 1


def test_train_stream_broken_shard_error_or_skip(shard_set):
    """The training pipeline (resampled shards -> shuffle -> batches) stops with the shard's name,
    or, with a skip counter, drops and counts the lost samples and still yields every batch."""
    out, _ = shard_set
    for i in range(7):
        _truncate(out / f"shard-{i:06d}.tar", 512 * 7 + 100)  # every shard keeps its first sample only
    with pytest.raises(BadDataError, match=r"shard .*shard-00000\d\.tar: corrupted or truncated tar after sample"):
        _tokens(_train(out))
    skip = SkipCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = _tokens(_train(out, bpe=3, skip=skip))
    assert rows.shape == (12, 16) and skip.value >= 7 * 12


def test_train_slots_read_disjoint_shards(shard_set):
    out, _ = shard_set  # 7 shards, 2 ranks x 2 workers -> each slot resamples its own shards
    slots = [set(_train(out, rank=r, world=2).my_shards(w, 2)) for r in (0, 1) for w in (0, 1)]
    assert set().union(*slots) == set(range(7)) and sum(map(len, slots)) == 7


def test_train_uses_both_orientations(shard_set):
    out, samples = shard_set
    rows = _tokens(_train(out, bpe=20))
    by_tokens = {tuple(s.tokens.reshape(-1).tolist()): "orig" for s in samples}
    by_tokens.update({tuple(s.flip.reshape(-1).tolist()): "flip" for s in samples})
    kinds = [by_tokens[tuple(r.tolist())] for r in rows]
    assert {"orig", "flip"} == set(kinds)
    no_flip = _tokens(_train(out, bpe=20, use_flip=False))
    assert all(by_tokens[tuple(r.tolist())] == "orig" for r in no_flip)


def test_text_batches(tmp_path):
    samples = make_samples(6, flip=False, text=(2, 3, 8))
    for s in samples:
        s.label = None  # text-only data: no class
    out = write_set(tmp_path / "t", samples, 4, flip=False, text={"encoder": "clip", "max_len": 3, "dim": 8},
                    num_classes=None)
    m, urls, _ = resolve_manifest(str(out))
    b = next(iter(ValStream(m, urls, StreamConfig(batch_size=6))))
    assert b["text"].dtype == torch.float32 and b["text"].shape == (6, 3, 8)
    assert b["text_mask"].dtype == torch.bool and b["text_mask"].shape == (6, 3)
    assert torch.equal(b["text"][0], torch.from_numpy(samples[0].text[0]).float())
    assert torch.equal(b["label"], torch.zeros(6, dtype=torch.int64))
    tb = next(iter(TrainStream(m, urls, StreamConfig(batch_size=2), 1)))
    assert tb["text"].shape == (2, 3, 8)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_truncated_shard_error_names_shard(shard_set):
    out, _ = shard_set
    shard = out / "shard-000001.tar"
    _truncate(shard, 512 * 7 + 100)  # cut inside a member
    m, urls, _ = resolve_manifest(str(out))
    with pytest.raises(BadDataError, match=r"shard .*shard-000001\.tar"):
        list(iter_shard(urls[1], m, m.shards[1].samples))
    # cut on a member boundary: the tar reads cleanly but the manifest count exposes it
    data = shard.read_bytes()
    write_set(out.parent / "other", make_samples(8), 8)
    good = (out.parent / "other" / "shard-000000.tar").read_bytes()
    shard.write_bytes(good[:512 * 4 * 3])  # first samples only
    with pytest.raises(BadDataError, match=r"shard-000001\.tar: \d samples but the manifest lists 8"):
        list(iter_shard(urls[1], m, m.shards[1].samples))
    del data


def test_corrupted_shard_error_names_shard(shard_set):
    out, _ = shard_set
    shard = out / "shard-000002.tar"
    data = bytearray(shard.read_bytes())
    data[0:512] = b"\x07" * 512  # garbage header
    shard.write_bytes(bytes(data))
    m, urls, _ = resolve_manifest(str(out))
    with pytest.raises(BadDataError, match=r"shard-000002\.tar"):
        list(iter_shard(urls[2], m, m.shards[2].samples))


def _poison(out, sample_index_in_set, tmp_name="p"):
    """Rewrites shard 0 of ``out`` with one sample whose id is out of range (bypassing the writer's check)."""
    import io
    import tarfile

    import numpy as np

    shard = out / "shard-000000.tar"
    members = []
    with tarfile.open(shard) as tar:
        for mem in tar:
            members.append((mem, tar.extractfile(mem).read()))
    with tarfile.open(shard, "w") as tar:
        for mem, data in members:
            if mem.name == f"k{sample_index_in_set:06d}.tokens.npy":
                buf = io.BytesIO()
                np.save(buf, np.full((4, 4), CODEBOOK + 3, np.uint16))
                data = buf.getvalue()
                mem.size = len(data)
            tar.addfile(mem, io.BytesIO(data))


def test_bad_token_id_error_or_skip(shard_set):
    out, samples = shard_set
    _poison(out, 2)
    m, urls, _ = resolve_manifest(str(out))
    with pytest.raises(BadDataError, match=r"shard-000000\.tar, sample 'k000002': tokens id 19 >= codebook size 16"):
        list(iter_shard(urls[0], m, m.shards[0].samples))
    skip = SkipCounter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = [s.key for _, s in iter_shard(urls[0], m, m.shards[0].samples, skip)]
    assert skip.value == 1 and "k000002" not in got and len(got) == 7
    assert any("k000002" in str(x.message) for x in w)
    # the counter is shared with DataLoader workers
    skip2 = SkipCounter()
    ds = ValStream(m, urls, StreamConfig(batch_size=5, num_workers=2), skip2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(len(b["label"]) for b in DataLoader(ds, batch_size=None, num_workers=2))
    assert n == len(samples) - 1 and skip2.value == 1


def test_truncated_shard_skip_counts_lost_samples(shard_set):
    out, samples = shard_set
    _truncate(out / "shard-000003.tar", 512 * 7 + 100)
    m, urls, _ = resolve_manifest(str(out))
    skip = SkipCounter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = list(iter_shard(urls[3], m, m.shards[3].samples, skip))
    assert len(got) + skip.value == 8 and skip.value >= 1


@pytest.mark.parametrize("fmt, mode", [("USTAR_FORMAT", "w"), ("GNU_FORMAT", "w"), ("PAX_FORMAT", "w"),
                                       ("PAX_FORMAT", "w:gz")])
def test_iter_shard_reads_repacked_shards(tmp_path, fmt, mode):
    """Shards repacked by other tools (GNU long names, pax headers, directories, gzip) read the same;
    the sample key is the member name's base name up to its first dot."""
    import io
    import tarfile

    from enat_lightning.data.format import Manifest, ShardInfo, encode_sample

    samples = make_samples(3)
    prefix = "sub/" if fmt == "USTAR_FORMAT" else "d" * 120 + "/"
    with tarfile.open(tmp_path / "t.tar", mode, format=getattr(tarfile, fmt)) as tar:
        tar.addfile(_dir_info())
        for s in samples:
            for name, data in encode_sample(s, CODEBOOK).items():
                info = tarfile.TarInfo(f"{prefix}{s.key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    m = Manifest(sample_count=3, shards=[ShardInfo("t.tar", 3)], codebook_size=CODEBOOK, latent_side=4,
                 num_classes=5, tokenizer={}, has_flip=True)
    got = list(iter_shard(str(tmp_path / "t.tar"), m, 3))
    assert [(pos, s.key) for pos, s in got] == [(i, s.key) for i, s in enumerate(samples)]
    assert all((g.tokens == s.tokens).all() and (g.flip == s.flip).all() and g.label == s.label
               for (_, g), s in zip(got, samples))


def test_shards_are_plain_webdataset(shard_set):
    """What the writer makes is read by webdataset's own pipeline, and a `pipe:` URL is read by ours."""
    import webdataset as wds

    out, samples = shard_set
    m, urls, _ = resolve_manifest(str(out))
    raw = list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    assert [r["__key__"] for r in raw] == [s.key for s in samples]
    assert set(raw[0]) >= {"tokens.npy", "flip.npy", "cls"} and int(raw[0]["cls"]) == samples[0].label
    got = [s.key for _, s in iter_shard(f"pipe:cat {urls[1]}", m, m.shards[1].samples)]
    assert got == [s.key for s in samples[8:16]]
    with pytest.raises(BadDataError, match=r"shard pipe:cat /nonexistent\.tar"):
        list(iter_shard("pipe:cat /nonexistent.tar 2>/dev/null", m, 8))
def _dir_info():
    import tarfile

    info = tarfile.TarInfo("adir")
    info.type = tarfile.DIRTYPE
    return info
