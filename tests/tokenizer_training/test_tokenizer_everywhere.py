"""A trained tokenizer is a tokenizer everywhere: demo shards, manifests, codebook checks, evaluation."""
from __future__ import annotations

import pytest
import torch

from enat_lightning.data.datamodule import TokenShardDataModule
from enat_lightning.demo.data import ensure_demo_data, tokenize_demo
from enat_lightning.errors import UserError
from enat_lightning.evaluation.tokenizer import measure_reconstructions, shard_codebook_stats
from enat_lightning.tokenizers import check_codebook_size, load_tokenizer
from enat_lightning.tokenizers.autoencoder import VQAutoencoder, save_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_tokenizer(seed: int) -> VQAutoencoder:
    torch.manual_seed(seed)
    return VQAutoencoder({"ch": 32, "ch_mult": [1, 1, 1], "num_res_blocks": 1, "z_channels": 32, "image_size": 16},
                         {"kind": "fsq", "codebook_size": 16, "fsq_levels": [4, 4]}).eval()


@pytest.fixture(scope="module")
def digits_vq(tmp_path_factory):
    """The digits demo data tokenized by a (random) trained-tokenizer file."""
    root = tmp_path_factory.mktemp("vq")
    path = save_tokenizer(tiny_tokenizer(0), root / "tok.pt")
    paths = tokenize_demo(load_tokenizer(str(path)), root / "data", dataset="digits")
    return path, paths


def test_demo_shards_of_a_trained_tokenizer(digits_vq):
    path, paths = digits_vq
    dm = TokenShardDataModule(str(paths.train), str(paths.val), codebook_size=16, grid=4, num_classes=10,
                              tokenizer=str(path))
    dm.setup("fit")  # the manifest records this tokenizer: accepted
    m = dm.manifest("train")
    assert m.tokenizer["kind"] == "vq-autoencoder" and m.latent_side == 4 and m.sample_count > 1000
    stats = shard_codebook_stats(str(paths.val))
    assert 0 < stats["used_codes"] <= 16 and stats["samples"] == dm.manifest("val").sample_count


def test_manifests_refuse_shards_of_another_tokenizer(digits_vq, tmp_path):
    _, paths = digits_vq
    other = save_tokenizer(tiny_tokenizer(1), tmp_path / "other.pt")  # same architecture, other weights
    with pytest.raises(ValueError, match="were made with tokenizer vq-autoencoder.*re-tokenize"):
        TokenShardDataModule(str(paths.train), tokenizer=str(other)).setup("fit")
    kmeans = ensure_demo_data(dataset="digits").tokenizer
    with pytest.raises(ValueError, match="is demo"):
        TokenShardDataModule(str(paths.train), tokenizer=f"demo:{kmeans}").setup("fit")


def test_generator_codebook_mismatch_is_one_line_naming_both():
    with pytest.raises(UserError) as err:
        check_codebook_size(tiny_tokenizer(0), 256, "model.net.init_args", "--tokenizer tok.pt")
    msg = str(err.value)
    assert "\n" not in msg and "--tokenizer tok.pt has 16 codes" in msg and "codebook_size 256" in msg


def test_measure_reconstructions_of_a_tokenizer():
    from enat_lightning.demo.data import load_images

    images = load_images("digits")[0][:40]
    res = measure_reconstructions(tiny_tokenizer(0), [images[:20], images[20:]])
    assert res["images"] == 40 and res["codebook_size"] == 16 and 0 < res["codebook_usage"] <= 1
    assert res["psnr"] > 0 and -1 <= res["ssim"] <= 1 and 1 <= res["perplexity"] <= 16
    assert "rfid" not in res  # no feature network given


@pytest.mark.parametrize("quantizer", [{"kind": "vq", "codebook_size": 16, "code_dim": 4},
                                       {"kind": "vq", "codebook_size": 16, "cosine": True},
                                       {"kind": "lfq", "codebook_size": 16},
                                       {"kind": "fsq", "codebook_size": 16, "fsq_levels": [4, 4]}])
def test_decode_uses_the_codes_the_encoder_picked(quantizer):
    """ids -> codes equals the quantizer's own output (vector-quantize-pytorch 1.32's get_output_from_indices
    projects the wrong axis of image feature maps when code_dim < z_channels)."""
    torch.manual_seed(0)
    m = VQAutoencoder({"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "z_channels": 32, "image_size": 8},
                      quantizer)
    m(torch.rand(2, 3, 8, 8))  # one training forward (k-means / EMA state)
    m.eval()
    z = m.encoder(torch.rand(2, 3, 8, 8))
    z_q, ids, _ = m.quantize(z)
    torch.testing.assert_close(m.codes(ids), z_q.float())
