"""HashTextEncoder (test double): determinism, word identity/order, null caption, spec parsing."""
import pytest
import torch

from enat_lightning.text import HashTextEncoder, TextEncoder, build_text_encoder, encode_in_batches


def test_shapes_mask_and_null_caption():
    enc = HashTextEncoder(dim=16, length=8)
    assert isinstance(enc, TextEncoder)
    emb, mask = enc.encode(["A red bus.", "", "one two three four five six seven eight"])
    assert emb.shape == (3, 8, 16) and emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [5, 2, 8]  # start + words + end, cut at 8
    assert bool((emb[~mask] == 0).all())
    null_emb, null_mask = enc.encode([""])
    assert torch.equal(null_emb[0], emb[1]) and null_mask.sum() == 2


def test_deterministic_and_word_sensitive():
    a, b = HashTextEncoder(), HashTextEncoder()
    e1, _ = a.encode(["a cat on a mat"])
    e2, _ = b.encode(["A cat, on a MAT!"])  # case and punctuation are ignored
    assert torch.equal(e1, e2)
    e3, _ = a.encode(["a dog on a mat"])
    assert not torch.equal(e1[0, 2], e3[0, 2]) and torch.equal(e1[0, 3:], e3[0, 3:])
    e4, _ = a.encode(["mat a on cat a"])
    assert not torch.equal(e1, e4)  # order matters (position code)
    assert not torch.equal(e1, HashTextEncoder(seed=1).encode(["a cat on a mat"])[0])
    with pytest.raises(TypeError, match="list"):
        a.encode("a cat")


def test_encode_in_batches_matches_encode():
    enc = HashTextEncoder(dim=8, length=6)
    caps = [f"caption {i}" for i in range(7)]
    emb, mask = encode_in_batches(enc, caps, batch_size=3)
    ref, ref_mask = enc.encode(caps)
    assert emb.dtype.name == "float16" and emb.shape == (7, 6, 8)
    assert (mask == ref_mask.numpy()).all()
    assert abs(emb.astype("float32") - ref.numpy()).max() < 1e-2
    assert encode_in_batches(enc, [])[0].shape == (0, 6, 8)


def test_build_text_encoder_specs(tmp_path):
    enc = build_text_encoder("hash:dim=12,length=5,seed=3")
    assert (enc.dim, enc.length, enc.seed) == (12, 5, 3) and enc.identity()["test_double"] is True
    assert build_text_encoder("hash").dim == 16
    with pytest.raises(ValueError, match="size=3"):
        build_text_encoder("hash:size=3")
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        build_text_encoder("bert")
    with pytest.raises(FileNotFoundError, match="nope"):
        build_text_encoder(f"clip:{tmp_path / 'nope'}")
