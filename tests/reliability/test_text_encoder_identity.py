"""Text models (issue 25, item 10): sampling with a text encoder of the same shape but another identity (other
weights, another seed) is refused; the checkpoint records the encoder of its training captions."""
from __future__ import annotations

import pytest
import torch

from commands_helpers import one_line_error
from enat_lightning.models import ENATConfig, build_model
from enat_lightning.sampling.checkpoint import load_generator, save_generator_checkpoint
from enat_lightning.text import build_text_encoder
from enat_lightning.text.base import check_encoder_identity

TEXT = ENATConfig(codebook_size=32, num_classes=1, grid=4, width=32, heads=2, enc_depth=1, dec_depth=1,
                  condition="text", text_dim=16, text_len=8)


@pytest.fixture
def text_ckpt(tmp_path):
    torch.manual_seed(0)
    ident = build_text_encoder("hash:dim=16,length=8,seed=0").identity()
    return save_generator_checkpoint(tmp_path / "t.ckpt", TEXT, build_model(TEXT).state_dict(),
                                     extra={"text_encoder": ident})


def test_an_encoder_of_the_same_shape_but_another_identity_is_refused(text_ckpt, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\n")
    one_line_error(capsys, ["sample", "--ckpt", str(text_ckpt), "--prompts", str(prompts), "--text_encoder",
                            "hash:dim=16,length=8,seed=1", "--steps", "2", "--out", str(tmp_path / "s"),
                            "--no-progress"], "not the encoder", "seed 0 there, 1 now")
    assert main_ok(text_ckpt, prompts, tmp_path)


def main_ok(ckpt, prompts, tmp_path) -> bool:
    from enat_lightning.cli import main

    return main(["sample", "--ckpt", str(ckpt), "--prompts", str(prompts), "--text_encoder",
                 "hash:dim=16,length=8,seed=0", "--steps", "2", "--out", str(tmp_path / "ok"), "--no-progress"]) == 0


def test_the_loader_exposes_the_recorded_identity(text_ckpt):
    model, _ = load_generator(text_ckpt)
    assert model.text_encoder_identity["kind"] == "hash" and model.text_encoder_identity["seed"] == 0


def test_a_copied_encoder_is_the_same_encoder():
    a = {"kind": "clip", "path": "/a/clip", "dim": 768, "length": 77, "weights": "abc"}
    check_encoder_identity({**a, "path": "/b/clip"}, a, "checkpoint x")  # moved, same weights: fine
    with pytest.raises(ValueError, match="weights 'abc' there, 'def' now"):
        check_encoder_identity({**a, "weights": "def"}, a, "checkpoint x")
