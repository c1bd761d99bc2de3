import json

import numpy as np
import pytest

from enat_lightning.data.format import (BadDataError, Manifest, Sample, check_sample, decode_sample, encode_sample,
                                        write_shard)
from enat_lightning.data.reader import iter_shard, resolve_manifest

from shard_helpers import make_samples, write_set


def _manifest(**kw) -> Manifest:
    base = dict(sample_count=0, shards=[], codebook_size=16, latent_side=4, num_classes=5, tokenizer={},
                has_flip=True)
    return Manifest(**{**base, **kw})


def test_sample_round_trip_with_text():
    s = make_samples(1, text=(2, 3, 8))[0]
    fields = encode_sample(s, 16)
    assert set(fields) == {"tokens.npy", "flip.npy", "cls", "text.npy", "text_mask.npy"}
    d = decode_sample(s.key, fields, "here")
    assert d.tokens.dtype == np.uint16 and np.array_equal(d.tokens, s.tokens)
    assert np.array_equal(d.flip, s.flip) and d.label == s.label
    assert d.text.dtype == np.float16 and d.text.shape == (2, 3, 8) and np.array_equal(d.text_mask, s.text_mask)
    check_sample(d, _manifest(text={"encoder": "x", "max_len": 3, "dim": 8}), "here")


@pytest.mark.parametrize("change, msg", [
    (dict(tokens=np.full((4, 4), 16)), "id 16 >= codebook size 16"),
    (dict(label=5), "label 5 outside [0, 5)"),
    (dict(tokens=np.zeros((2, 2), int)), "shape (2, 2) != latent 4x4"),
    (dict(flip=None), "flip.npy is missing"),
])
def test_check_sample_names_place_and_value(change, msg):
    s = make_samples(1)[0]
    for k, v in change.items():
        setattr(s, k, v)
    with pytest.raises(BadDataError, match="shard X, sample 'k000000'") as e:
        check_sample(s, _manifest(), "shard X")
    assert msg in str(e.value)


def test_encode_refuses_out_of_range_and_dotted_keys():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        encode_sample(make_samples(1)[0], 8)
    with pytest.raises(ValueError, match="must not contain"):
        encode_sample(Sample(key="a.b", tokens=np.zeros((4, 4), int)), 16)


def test_write_shard_is_deterministic_and_leaves_no_tmp(tmp_path):
    samples = make_samples(5)
    write_shard(tmp_path / "a.tar", samples, 16)
    write_shard(tmp_path / "b.tar", samples, 16)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]


def test_manifest_written_and_read(tmp_path):
    out = write_set(tmp_path / "s", make_samples(20), shard_size=8)
    m, urls, where = resolve_manifest(str(out))
    assert m.sample_count == 20 and [s.samples for s in m.shards] == [8, 8, 4]
    assert [p.rsplit("/", 1)[1] for p in urls] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    got = [s.key for url in urls for _, s in iter_shard(url, m)]
    assert got == [f"k{i:06d}" for i in range(20)]
    # a brace pattern selects a subset of the listed shards
    m2, urls2, _ = resolve_manifest(str(out / "shard-{000001..000002}.tar"))
    assert m2.sample_count == 12 and urls2 == urls[1:]


def test_manifest_version_and_missing(tmp_path):
    out = write_set(tmp_path / "s", make_samples(4), shard_size=8)
    d = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**d, "format_version": 99}))
    with pytest.raises(BadDataError, match="format_version 99"):
        resolve_manifest(str(out))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        resolve_manifest(str(tmp_path / "nothing"))
