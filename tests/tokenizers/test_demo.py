import pytest
import torch

from enat_lightning.tokenizers import Tokenizer
from enat_lightning.tokenizers.demo import DemoTokenizer


def _tok(k=8, p=2, size=8) -> DemoTokenizer:
    g = torch.Generator().manual_seed(0)
    return DemoTokenizer(torch.rand(k, p * p, generator=g), patch=p, image_size=size)


def test_protocol_and_shapes():
    tok = _tok()
    assert isinstance(tok, Tokenizer) and tok.codebook_size == 8 and tok.downsample == 2
    x = torch.rand(3, 3, 8, 8)
    ids = tok.encode(x)  # (B, h, w)
    assert ids.shape == (3, 4, 4) and ids.dtype == torch.int64
    img = tok.decode(ids)
    assert img.shape == (3, 3, 8, 8) and torch.equal(img[:, 0], img[:, 2])


def test_decode_then_encode_is_identity():
    tok = _tok()
    ids = torch.randint(0, 8, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    assert torch.equal(tok.encode(tok.decode(ids)), ids)


def test_encode_picks_nearest_centroid_per_patch():
    tok = DemoTokenizer(torch.tensor([[0.0] * 4, [1.0] * 4, [0.5] * 4]), patch=2, image_size=4)
    x = torch.zeros(1, 3, 4, 4)
    x[..., :2, 2:] = 0.9  # top-right patch near white
    x[..., 2:, :2] = 0.6  # bottom-left patch near grey
    assert tok.encode(x).tolist() == [[[0, 1], [2, 0]]]


def test_save_load_keeps_identity(tmp_path):
    tok = _tok()
    tok.save(tmp_path / "t.npz")
    back = DemoTokenizer.load(tmp_path / "t.npz")
    assert back.identity() == tok.identity() and torch.equal(back.centroids, tok.centroids)
    assert tok.identity()["kind"] == "demo" and len(tok.identity()["weights_sha256"]) == 64
    assert _tok(k=9).identity() != tok.identity()


def test_bad_inputs_named():
    tok = _tok()
    with pytest.raises(ValueError, match="multiple of the patch size 2"):
        tok.encode(torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        tok.decode(torch.full((1, 2, 2), 8))
    with pytest.raises(FileNotFoundError, match="enat tokenize demo"):
        DemoTokenizer.load("/nonexistent/t.npz")
