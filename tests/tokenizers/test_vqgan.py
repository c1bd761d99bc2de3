"""MaskGIT VQGAN: parity with the official tiny fixture, shapes, loading and errors."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import types

import pytest
import torch

from enat_lightning.errors import UserError
from enat_lightning.tokenizers import VQGAN, VQGAN_PRESETS, Tokenizer, VQGANConfig, load_tokenizer
from enat_lightning.tokenizers.vqgan import ResnetBlock
from enat_testing import tolerance


@pytest.fixture(scope="module")
def vqgan(official_vqgan) -> VQGAN:
    c = official_vqgan["config"]
    return VQGAN.from_official(c["ddconfig"], c["n_embed"], c["embed_dim"], official_vqgan["state_dict"])


@pytest.fixture
def tiny_ckpt(tmp_path, official_vqgan):
    """The fixture weights as an official-style checkpoint, with loss.* keys the loader must skip."""
    sd = dict(official_vqgan["state_dict"])
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    path = tmp_path / "vqgan_jax_strongaug.ckpt"
    torch.save({"state_dict": sd, "global_step": 0}, path)
    return path


# ------------------------------------------------------------------------------ official parity


def test_parity_with_official_fixture(vqgan, official_vqgan):
    ref = official_vqgan
    assert not vqgan.training
    z_e = vqgan.encode_latent(ref["images"])
    torch.testing.assert_close(z_e, ref["z_e"], rtol=0, atol=tolerance(ref["z_e"]))
    z_q, ids = vqgan.quantize(z_e)
    assert torch.equal(ids, ref["token_ids"]) and ids.dtype == torch.int64
    torch.testing.assert_close(z_q, ref["z_q"], rtol=0, atol=tolerance(ref["z_q"]))
    assert torch.equal(vqgan.encode(ref["images"]), ref["token_ids"])
    decoded = vqgan.decode_unclamped(ref["token_ids"])
    torch.testing.assert_close(decoded, ref["decoded"], rtol=0, atol=tolerance(ref["decoded"]))
    assert decoded.min() < 0 and decoded.max() > 1  # unclamped, like the official decode
    # the Tokenizer protocol's decode: the same, clamped to [0, 1]
    torch.testing.assert_close(vqgan.decode(ref["token_ids"]), ref["decoded"].clamp(0, 1), rtol=0,
                               atol=tolerance(ref["decoded"]))


def test_quantizer_picks_nearest_code_lowest_index_on_ties(vqgan):
    e = vqgan.quantize.embedding.weight
    z = torch.stack([e[5], e[700] + 1e-3 * torch.ones_like(e[700])]).T.reshape(1, -1, 1, 2)  # (1, C, 1, 2)
    z_q, ids = vqgan.quantize(z)
    assert ids.tolist() == [[[5, 700]]]
    torch.testing.assert_close(z_q[0, :, 0, 0], e[5])


def test_config_matches_fixture_and_official_preset(vqgan, official_vqgan):
    assert vqgan.cfg == VQGAN_PRESETS["tiny"]
    real = VQGAN_PRESETS["maskgit-f16"]  # vq-f16-jax.yaml: differs from the fixture only in these fields
    assert (real.ch, real.z_channels, real.embed_dim, real.resolution) == (128, 256, 256, 256)
    assert dataclasses.replace(real, ch=32, z_channels=32, embed_dim=32, resolution=64) == vqgan.cfg
    assert real.ch_mult == (1, 1, 2, 2, 4) and real.num_res_blocks == 2 and real.n_embed == 1024
    assert VQGANConfig.from_dict(real.to_dict()) == real
    assert VQGANConfig.from_dict(official_vqgan["config"]) == vqgan.cfg
    assert isinstance(real.to_dict()["ch_mult"], list)
    with pytest.raises(dataclasses.FrozenInstanceError):
        real.ch = 64


def test_real_config_shapes_on_meta_device():
    with torch.device("meta"):
        model = VQGAN(VQGAN_PRESETS["maskgit-f16"])
        z = model.encode_latent(torch.empty(1, 3, 256, 256))
        img = model.decoder(torch.empty(1, 256, 16, 16))
    assert z.shape == (1, 256, 16, 16) and img.shape == (1, 3, 256, 256)
    assert model.downsample == 16 and model.codebook_size == 1024
    assert not any("attn" in k or "quant_conv" in k for k in model.state_dict())


def test_nin_shortcut_projects_the_residual_branch_not_the_input():
    torch.manual_seed(0)
    blk = ResnetBlock(32, 64)
    x = torch.randn(1, 32, 4, 4)
    h = blk.conv2(torch.nn.functional.silu(blk.norm2(blk.conv1(torch.nn.functional.silu(blk.norm1(x))))))
    torch.testing.assert_close(blk(x), blk.nin_shortcut(h) + h)
    assert blk.nin_shortcut.weight.shape == (64, 64, 1, 1) and blk.conv1.bias is None


# ------------------------------------------------------------------------------ tokenizer API


def test_protocol_round_trip_shapes_and_batching(vqgan):
    assert isinstance(vqgan, Tokenizer)
    images = torch.rand(2, 3, 16, 32, generator=torch.Generator().manual_seed(0))
    ids = vqgan.encode(images)
    assert ids.shape == (2, 1, 2) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < vqgan.codebook_size
    # batched == one at a time
    assert torch.equal(torch.cat([vqgan.encode(images[i:i + 1]) for i in range(2)]), ids)
    out = vqgan.decode(ids)
    assert out.shape == (2, 3, 16, 32) and out.dtype == torch.float32
    assert torch.equal(vqgan.encode(images.double()), ids)  # any float dtype is accepted


def test_outputs_carry_no_graph(vqgan):
    assert vqgan.decode(torch.zeros(1, 1, 1, dtype=torch.long)).requires_grad is False
    assert vqgan.encode_latent(torch.rand(1, 3, 16, 16)).requires_grad is False


def test_identity_without_file(vqgan):
    ident = vqgan.identity()
    assert ident["kind"] == "vqgan" and ident["weights_sha256"] is None
    assert VQGANConfig.from_dict(ident["config"]) == vqgan.cfg


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 3, 32, 40), (3, 32, 32), (1, 1, 32, 32)])
def test_encode_rejects_bad_shapes(vqgan, shape):
    with pytest.raises(ValueError, match=r"multiples of 16.*" + re.escape(str(tuple(shape)))):
        vqgan.encode(torch.rand(shape))


def test_encode_rejects_integer_images(vqgan):
    with pytest.raises(ValueError, match="float in"):
        vqgan.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize("ids, msg", [(torch.tensor([[[1024]]]), r"\[0, 1024\)"),
                                      (torch.tensor([[[-1]]]), r"\[0, 1024\)"),
                                      (torch.zeros(1, 4, dtype=torch.long), r"\(B, h, w\)"),
                                      (torch.zeros(1, 2, 2), r"integer")])
def test_decode_rejects_bad_ids(vqgan, ids, msg):
    with pytest.raises(ValueError, match=msg):
        vqgan.decode(ids)


@pytest.mark.requires_cuda
def test_cuda_matches_cpu(vqgan, official_vqgan):
    gpu = VQGAN.from_official(**_official_args(official_vqgan)).cuda()
    ids = gpu.encode(official_vqgan["images"])  # CPU input is moved to the model's device
    assert ids.device.type == "cuda" and torch.equal(ids.cpu(), official_vqgan["token_ids"])
    ref = official_vqgan["decoded"]
    torch.testing.assert_close(gpu.decode(ids).cpu(), ref, rtol=0, atol=10 * tolerance(ref))


# ------------------------------------------------------------------------------ from_official


def _official_args(fx, **changes):
    c = fx["config"]
    args = {"ddconfig": dict(c["ddconfig"]), "n_embed": c["n_embed"], "embed_dim": c["embed_dim"],
            "state_dict": dict(fx["state_dict"])}
    args.update(changes)
    return args


def test_from_official_reports_every_mismatch(official_vqgan):
    sd = dict(official_vqgan["state_dict"])
    del sd["encoder.conv_in.weight"]
    sd["encoder.quant_conv.weight"] = torch.zeros(1)
    sd["decoder.conv_out.bias"] = torch.zeros(4)
    with pytest.raises(ValueError) as err:
        VQGAN.from_official(**_official_args(official_vqgan, state_dict=sd))
    msg = str(err.value)
    assert "missing keys: ['encoder.conv_in.weight']" in msg
    assert "unexpected keys: ['encoder.quant_conv.weight']" in msg
    assert "decoder.conv_out.bias: checkpoint (4,) vs model (3,)" in msg


def test_from_official_wrong_width_names_shapes(official_vqgan):
    dd = dict(official_vqgan["config"]["ddconfig"], ch=64)
    shapes = r"encoder.conv_in.weight: checkpoint \(32, 3, 3, 3\) vs model \(64, 3, 3, 3\)"
    with pytest.raises(ValueError, match=shapes):
        VQGAN.from_official(**_official_args(official_vqgan, ddconfig=dd))


def test_from_official_rejects_embed_dim_not_z_channels(official_vqgan):
    with pytest.raises(ValueError, match=r"embed_dim \(64\) must equal z_channels \(32\)"):
        VQGAN.from_official(**_official_args(official_vqgan, embed_dim=64))


def test_from_official_rejects_unknown_ddconfig_key(official_vqgan):
    dd = dict(official_vqgan["config"]["ddconfig"], give_pre_end=True)
    with pytest.raises(ValueError, match="give_pre_end"):
        VQGAN.from_official(**_official_args(official_vqgan, ddconfig=dd))


# ------------------------------------------------------------------------------ from_checkpoint


def test_from_checkpoint_matches_from_official(tiny_ckpt, official_vqgan):
    model = VQGAN.from_checkpoint(tiny_ckpt, config="tiny")
    assert not model.training
    assert torch.equal(model.encode(official_vqgan["images"]), official_vqgan["token_ids"])
    assert model.identity()["weights_sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()


def _same_weights(a: VQGAN, b: VQGAN) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_from_checkpoint_bare_state_dict_and_dict_config(tmp_path, official_vqgan, vqgan):
    path = tmp_path / "bare.pth"
    torch.save(official_vqgan["state_dict"], path)
    model = VQGAN.from_checkpoint(path, config=official_vqgan["config"])  # official config layout
    assert _same_weights(model, vqgan) and model.weights_sha256 is not None


def test_from_checkpoint_missing_file_says_where_to_get_it(tmp_path):
    path = tmp_path / "nope" / "vqgan_jax_strongaug.ckpt"
    with pytest.raises(FileNotFoundError) as err:
        VQGAN.from_checkpoint(path)
    assert str(path) in str(err.value) and "assets/vqgan_jax_strongaug.ckpt" in str(err.value)
    assert "MAGE" in str(err.value)


def test_from_checkpoint_wrong_files(tmp_path, tiny_ckpt):
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"cannot read VQGAN checkpoint {junk}"):
        VQGAN.from_checkpoint(junk)
    # right file, wrong config: the real preset's shapes are named
    with pytest.raises(ValueError, match=r"(?s)does not fit.*encoder.conv_in.weight: checkpoint \(32, 3, 3, 3\) "
                                         r"vs model \(128, 3, 3, 3\)"):
        VQGAN.from_checkpoint(tiny_ckpt)
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="holds no state dict"):
        VQGAN.from_checkpoint(other)


class _Opaque:  # a pickled object that weights_only loading refuses
    pass


def test_from_checkpoint_with_python_objects_needs_trust(tmp_path, official_vqgan, vqgan):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": dict(official_vqgan["state_dict"]), "callbacks": _Opaque()}, path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        VQGAN.from_checkpoint(path, config="tiny")
    assert _same_weights(VQGAN.from_checkpoint(path, config="tiny", trust_pickle=True), vqgan)


# ------------------------------------------------------------------------------ load_tokenizer


def test_load_tokenizer_from_class_path_spec(tiny_ckpt, vqgan):
    tok = load_tokenizer({"class_path": "enat_lightning.tokenizers.VQGAN",
                          "init_args": {"path": str(tiny_ckpt), "config": "tiny"}})
    assert isinstance(tok, VQGAN) and _same_weights(tok, vqgan) and not tok.training
    tok = load_tokenizer({"class_path": "VQGAN", "init_args": {"path": tiny_ckpt,
                                                               "config": VQGAN_PRESETS["tiny"].to_dict()}})
    assert tok.cfg == VQGAN_PRESETS["tiny"] and tok.token_shape == (4, 4)  # tiny: 64 px / 16
    text = json.dumps({"class_path": "enat_lightning.tokenizers.VQGAN",
                       "init_args": {"path": str(tiny_ckpt), "config": "tiny"}})
    assert _same_weights(load_tokenizer(text), vqgan)  # the command-line spelling


def test_load_tokenizer_path_assumes_official_config(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="does not fit"):  # a path spec means the real (maskgit-f16) architecture
        load_tokenizer(tiny_ckpt)
    with pytest.raises(FileNotFoundError, match="vqgan_jax_strongaug"):
        load_tokenizer(str(tmp_path / "missing.ckpt"))


@pytest.mark.parametrize("spec, err, msg", [
    ("weights.bin", UserError, "expected 'demo'"),
    ({"kind": "vqgan", "path": "x.ckpt"}, UserError, r"kind: \.\.\.\} form is gone; write \{class_path: "
                                                     r"enat_lightning.tokenizers.VQGAN"),
    ({"class_path": "taming.Nope"}, UserError, "cannot be imported"),
    ({"class_path": "Nope"}, UserError, "unknown tokenizer class_path 'Nope'"),
    ({"class_path": "VQGAN", "init_args": {"ckpt": 1}}, UserError, "bad init_args"),
    ({"class_path": "VQGAN", "init_args": {"path": "x.ckpt", "config": "huge"}}, ValueError,
     "unknown VQGAN preset 'huge'"),
    ({"class_path": "VQGAN", "extra": 1}, UserError, r"unknown: \['extra'\]"),
    ({"class_path": "json.JSONDecoder"}, UserError, "is not a tokenizer"),
    (3, UserError, "must be a path"),
])
def test_load_tokenizer_bad_specs(spec, err, msg):
    with pytest.raises(err, match=msg):
        load_tokenizer(spec)


def test_load_tokenizer_demo_aliases_dispatch_to_demo_module(monkeypatch):
    calls = []
    fake = types.ModuleType("enat_lightning.tokenizers.demo")
    fake.DemoTokenizer = type("DemoTokenizer", (), {
        "from_config": classmethod(lambda cls, path=None: calls.append(path) or "demo-tok"),
        "encode": None, "decode": None, "identity": None})
    monkeypatch.setitem(sys.modules, "enat_lightning.tokenizers.demo", fake)
    assert load_tokenizer({"class_path": "DemoTokenizer", "init_args": {"path": "demo.npz"}}) == "demo-tok"
    assert load_tokenizer("demo:d.npz") == load_tokenizer("e.npz") == load_tokenizer("demo-kmeans") == "demo-tok"
    assert calls == ["demo.npz", "d.npz", "e.npz", None]


def test_the_demo_alias_names_the_committed_trained_tokenizer():
    from enat_lightning.tokenizers import normalize_spec
    from enat_lightning.tokenizers.demo import demo_vq_tokenizer

    assert normalize_spec("demo") == {"class_path": "enat_lightning.tokenizers.VQAutoencoder",
                                      "init_args": {"path": str(demo_vq_tokenizer())}}
    assert normalize_spec("demo-kmeans") == {"class_path": "enat_lightning.tokenizers.DemoTokenizer", "init_args": {}}
