"""The diffusers VQModel wrapper: a saved vqvae/ folder loads as it is and round-trips exactly as diffusers'
own calls do (aMUSEd's lookup_from_codebook path and the LDM path); the missing extra is one line."""
from __future__ import annotations

import sys

import pytest
import torch

from enat_lightning.errors import UserError
from enat_lightning.tokenizers import Tokenizer, load_tokenizer
from enat_lightning.tokenizers.diffusers_vq import DiffusersVQ

pytestmark = pytest.mark.usefixtures("one_thread")


def save_tiny_vqmodel(root, lookup_from_codebook: bool):
    """A random-weight VQModel saved with save_pretrained into ``root/vqvae`` (the aMUSEd repo layout)."""
    from diffusers import VQModel

    torch.manual_seed(0)
    vq = VQModel(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, vq_embed_dim=4,
                 num_vq_embeddings=32, norm_num_groups=8, lookup_from_codebook=lookup_from_codebook).eval()
    with torch.no_grad():  # codes spread like trained ones, so the ids are not all one code
        vq.quantize.embedding.weight.normal_()
    vq.save_pretrained(root / "vqvae")
    return vq


@pytest.mark.parametrize("lookup, pixel_range", [(True, "0,1"), (False, "-1,1")], ids=["amused", "ldm"])
def test_round_trip_equals_diffusers_own_calls(tmp_path, lookup, pixel_range):
    ref = save_tiny_vqmodel(tmp_path, lookup)
    spec = {"class_path": "enat_lightning.tokenizers.DiffusersVQ",
            "init_args": {"path": str(tmp_path), "pixel_range": pixel_range, "image_size": 16}}
    tok = load_tokenizer(spec)  # the pipeline folder: vqvae/ is found inside
    assert tok.folder == tmp_path / "vqvae" and tok.codebook_size == 32 and tok.downsample == 2
    assert tok.token_shape == (8, 8) and isinstance(tok, Tokenizer)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x = images if pixel_range == "0,1" else images * 2 - 1
    ids = tok.encode(images)
    with torch.no_grad():
        latents = ref.encode(x).latents
        want_ids = ref.quantize(latents)[2][2].reshape(2, 8, 8)
        if lookup:  # AmusedPipeline's decode call
            want = ref.decode(want_ids, force_not_quantize=True, shape=(2, 8, 8, 4)).sample
        else:  # diffusers' own forward: encode, quantise, decode
            want = (ref(x).sample + 1) / 2
    assert ids.dtype == torch.int64 and ids.shape == (2, 8, 8) and torch.equal(ids, want_ids)
    assert ids.unique().numel() > 1
    torch.testing.assert_close(tok.decode(ids), want.clamp(0, 1), rtol=0, atol=1e-5)
    ident = tok.identity()
    assert ident["kind"] == "diffusers-vq" and ident["config"]["num_vq_embeddings"] == 32
    assert len(ident["weights_sha256"]) == 64


def test_missing_folder_and_bad_range_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json.*init_args.path"):
        DiffusersVQ(tmp_path)
    with pytest.raises(UserError, match="pixel_range"):
        DiffusersVQ(tmp_path, pixel_range="0-255")


def test_missing_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(UserError, match=r"optional extra \[diffusers\]: pip install") as err:
        DiffusersVQ(tmp_path)
    assert "\n" not in str(err.value)
