"""LlamaGen VQ: parity with LlamaGen's own vq_model.py (fixture), the VQ-16 checkpoint layout, loading, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from enat_lightning.tokenizers import Tokenizer, load_tokenizer
from enat_lightning.tokenizers.llamagen import PRESETS, LlamaGenVQ, LlamaGenVQConfig, load_llamagen_weights
from enat_testing import tolerance

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref() -> dict:
    with safe_open(FIXTURES / "llamagen_vq_tiny.safetensors", "pt") as f:
        out = {k: f.get_tensor(k) for k in f.keys()}
        out["config"] = json.loads(f.metadata()["config"])
    return out


@pytest.fixture(scope="module")
def model(ref) -> LlamaGenVQ:
    m = LlamaGenVQ(LlamaGenVQConfig(**ref["config"]))
    state = {k.removeprefix("state."): v for k, v in ref.items() if k.startswith("state.")}
    return load_llamagen_weights(m, state, "fixture").eval()  # fixture omits the codebook_used window


def test_parity_with_llamagen_fixture(model, ref):
    x = ref["images"] * 2 - 1
    z_e = model.quant_conv(model.encoder(x))
    torch.testing.assert_close(z_e, ref["z_e"], rtol=0, atol=tolerance(ref["z_e"]))
    assert ref["margin"].item() > 1e-4  # ids are a fair equality test at this margin
    ids = model.encode(ref["images"])
    assert ids.dtype == torch.int64 and ids.shape == (2, 8, 8) and torch.equal(ids, ref["ids"])
    raw = model.decode_latent(model.quantize.lookup(ref["ids"]))
    torch.testing.assert_close(raw, ref["decoded"], rtol=0, atol=tolerance(ref["decoded"]))
    torch.testing.assert_close(model.decode(ref["ids"]), ((ref["decoded"] + 1) / 2).clamp(0, 1), rtol=0, atol=1e-4)


def test_training_forward_matches_llamagen_losses(model, ref):
    out = model(ref["images"] * 2 - 1)  # eval mode: no dropout in either; the losses are computed always here
    torch.testing.assert_close(out.reconstruction, ref["train_reconstruction"], rtol=0,
                               atol=tolerance(ref["train_reconstruction"]))
    torch.testing.assert_close(out.quantized.codebook_loss, ref["train_codebook_loss"][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.quantized.commit_loss, ref["train_commit_loss"][0], rtol=1e-4, atol=1e-6)
    out.reconstruction.mean().backward()  # straight-through: the encoder gets gradient through the codes
    assert model.encoder.conv_in.weight.grad is not None and model.encoder.conv_in.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_vq16_checkpoint_layout_loads_unchanged(tmp_path):
    """Every key and shape of LlamaGen's VQ-16 state dict (recorded from their model) is ours, and a
    checkpoint in vq_train.py's format (``{"model": ..., "args": ...}``) loads strictly."""
    layout = json.loads((FIXTURES / "llamagen_vq16_layout.json").read_text())
    with torch.device("meta"):
        ours = LlamaGenVQ(PRESETS["vq-16"])
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == layout
    assert ours.codebook_size == 16384 and ours.quantize.embedding.weight.shape == (16384, 8)
    assert ours.downsample == 16 and ours.token_shape == (16, 16)
    # the full-size load on the meta device (no 280 MB file in a unit test): every key checked, strict
    state = {k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    assert load_llamagen_weights(ours, {"model": state, "steps": 0}, "vq_ds16_c2i.pt") is ours


def test_checkpoint_in_vq_train_format_loads(tmp_path, model):
    path = tmp_path / "vq_ds16_c2i.pt"
    state = {k: v + 1 for k, v in model.state_dict().items()}
    torch.save({"model": state, "steps": 0}, path)
    loaded = load_tokenizer({"class_path": "enat_lightning.tokenizers.LlamaGenVQ",
                             "init_args": {"path": str(path), "config": model.cfg.to_dict()}})
    assert isinstance(loaded, LlamaGenVQ) and isinstance(loaded, Tokenizer) and loaded.token_shape == (128, 128)
    assert torch.equal(loaded.quantize.embedding.weight, state["quantize.embedding.weight"])
    assert not loaded.training and loaded.identity()["source"] == "vq_ds16_c2i.pt"


def test_checkpoint_errors_are_one_line(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="vq_ds16_c2i.pt.*init_args.path"):
        LlamaGenVQ.from_checkpoint(tmp_path / "vq_ds16_c2i.pt")
    state = model.state_dict()
    state["quantize.extra"] = torch.zeros(1)
    del state["quant_conv.bias"]
    with pytest.raises(ValueError, match=r"missing \['quant_conv.bias'\].*unexpected \['quantize.extra'\]"):
        load_llamagen_weights(LlamaGenVQ(model.cfg), state)
    pickled = tmp_path / "args.pt"
    torch.save({"model": model.state_dict(), "args": Namespace(lr=1)}, pickled)
    with pytest.raises(ValueError, match="trust_pickle"):
        LlamaGenVQ.from_checkpoint(pickled, model.cfg)
    assert LlamaGenVQ.from_checkpoint(pickled, model.cfg.to_dict(), trust_pickle=True).codebook_size == 64
    with pytest.raises(ValueError, match="unknown LlamaGen VQ config keys"):
        LlamaGenVQ.from_checkpoint(pickled, {"n_embed": 3}, trust_pickle=True)


def test_quantizer_cosine_codes_and_bad_input(model):
    e = model.quantize.codes()
    assert torch.allclose(e.norm(dim=1), torch.ones(64))
    z = torch.stack([e[5] * 7.0, e[40] * 0.1]).T.reshape(1, -1, 1, 2)  # scale is ignored: cosine codes
    assert model.quantize(z).ids.tolist() == [[[5, 40]]]
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(torch.rand(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        model.decode(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        model.decode(torch.full((1, 2, 2), 64))


class Namespace:  # a pickled Python object, as LlamaGen's argparse args in its checkpoints
    def __init__(self, **kw):
        self.__dict__.update(kw)
