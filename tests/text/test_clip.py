"""CLIPTextEncoder: the missing-weights errors (always run) and the real transformers code path.

The code path is exercised on a tiny CLIP text model built and saved locally by the test (random
weights, a 38-entry character vocabulary): nothing is downloaded. Set ENAT_CLIP_DIR to a directory
holding real CLIP weights (e.g. openai/clip-vit-large-patch14 saved with save_pretrained) to also
check the U-ViT shapes (77 x 768).
"""
import json
import os
import string

import pytest
import torch

from enat_lightning.text import CLIPTextEncoder, build_text_encoder


def test_missing_weights_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "clip-vit-large-patch14"
    with pytest.raises(FileNotFoundError, match="clip-vit-large-patch14.*does not exist"):
        CLIPTextEncoder(missing)
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        CLIPTextEncoder(missing)
    with pytest.raises(FileNotFoundError, match="''"):
        CLIPTextEncoder("")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers", reason="the [t2i] extra (transformers) is not installed")
    d = tmp_path_factory.mktemp("tinyclip")
    chars = list(string.ascii_lowercase + string.digits)
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt")).save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1,
                                      pad_token_id=len(vocab) - 1)
    transformers.CLIPTextModel(cfg).save_pretrained(str(d))
    return d


def test_local_clip_code_path(tiny_clip_dir):
    enc = build_text_encoder(f"clip:{tiny_clip_dir}")
    assert isinstance(enc, CLIPTextEncoder) and (enc.length, enc.dim) == (77, 32)
    emb, mask = enc.encode(["a cat", "", "a dog on a red mat"])
    assert emb.shape == (3, 77, 32) and emb.dtype == torch.float32 and mask.shape == (3, 77)
    assert mask.sum(1).tolist() == [6, 2, 15]  # start + characters/word-ends + end
    again, _ = build_text_encoder(str(tiny_clip_dir)).encode(["a cat"])
    torch.testing.assert_close(again[0], emb[0])  # a directory path works too, deterministically
    # causal CLIP: the first real tokens do not depend on what follows
    torch.testing.assert_close(emb[0, :2], emb[2, :2])
    ident = enc.identity()
    assert ident["kind"] == "clip" and ident["dim"] == 32 and ident["weights"].startswith("model.safetensors:")


@pytest.mark.skipif(not os.environ.get("ENAT_CLIP_DIR"),
                    reason="real CLIP weights are not shipped; set ENAT_CLIP_DIR to a local CLIP text model")
def test_real_clip_weights():
    enc = CLIPTextEncoder(os.environ["ENAT_CLIP_DIR"])
    emb, mask = enc.encode(["A man riding a wave on top of a surfboard.", ""])
    assert emb.shape == (2, 77, 768) and mask[1].sum() == 2
