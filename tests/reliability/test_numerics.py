"""Numerics (issue 25, item 5): a checkpoint with NaN / inf weights is refused at load by every command; NaN or
inf logits during sampling (weights or an overflowing setting) are an error naming the checkpoint and setting,
never all-zero tokens; a checkpoint without EMA weights says that its raw weights are used."""
from __future__ import annotations

import pytest
import torch

from commands_helpers import TINY_ENAT, one_line_error, tiny_checkpoint
from enat_lightning.models import build_model
from enat_lightning.sampling.checkpoint import CheckpointError, load_generator, save_generator_checkpoint
from enat_lightning.sampling.iterative import NonFiniteLogitsError, generate
from enat_lightning.sampling.settings import SamplerSettings


def diverged(path, value=float("nan")):
    torch.manual_seed(0)
    sd = build_model(TINY_ENAT).state_dict()
    sd["head.weight" if "head.weight" in sd else next(iter(sd))].view(-1)[0] = value
    return save_generator_checkpoint(path, TINY_ENAT, sd)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, value):
    path = diverged(tmp_path / "nan.ckpt", value)
    with pytest.raises(CheckpointError, match=r"non-finite weights .* earlier checkpoint"):
        load_generator(path)


@pytest.mark.parametrize("argv", [["sample", "--labels", "1", "--steps", "2", "--no-progress", "--out", "{out}"],
                                  ["evaluate", "--num_samples", "4", "--feature", "demo", "--tokenizer", "demo"]])
def test_every_command_refuses_a_diverged_checkpoint(tmp_path, capsys, argv):
    path = diverged(tmp_path / "nan.ckpt")
    argv = [a.format(out=tmp_path / "s") for a in argv]
    one_line_error(capsys, [argv[0], "--ckpt", str(path), *argv[1:]], str(path), "non-finite weights")


def test_nan_logits_in_sampling_name_the_checkpoint(tmp_path):
    model, _ = load_generator(tiny_checkpoint(tmp_path / "m.ckpt"))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("weight")).fill_(float("nan"))
    with pytest.raises(NonFiniteLogitsError, match=rf"non-finite logits .*step 0 .*checkpoint {tmp_path / 'm.ckpt'}"):
        generate(model, torch.tensor([1, 2]), SamplerSettings(steps=2), generator=torch.Generator().manual_seed(0))


def test_an_overflowing_guidance_scale_is_an_error_naming_it(tmp_path):
    model, _ = load_generator(tiny_checkpoint(tmp_path / "m.ckpt"))
    s = SamplerSettings(steps=4, cfg_scale=1e300, guidance="constant")
    with pytest.raises(NonFiniteLogitsError, match="cfg_scale 1e\\+300"):
        generate(model, torch.tensor([1, 2]), s, generator=torch.Generator().manual_seed(0))


def test_a_checkpoint_without_ema_says_raw_weights_are_used(tmp_path, capsys):
    torch.manual_seed(0)
    weights = build_model(TINY_ENAT).state_dict()
    ckpt = {"hyper_parameters": {"net": {"class_path": "enat_lightning.models.ENATConfig",
                                         "init_args": TINY_ENAT.__dict__}},
            "state_dict": {f"net.{k}": v for k, v in weights.items()}}
    torch.save(ckpt, tmp_path / "raw.ckpt")
    model, _ = load_generator(tmp_path / "raw.ckpt")
    assert model.weights_source == "raw" and "no EMA weights" in capsys.readouterr().err
    model, _ = load_generator(tiny_checkpoint(tmp_path / "ema.ckpt"))
    assert model.weights_source == "ema" and "no EMA" not in capsys.readouterr().err


# -- item 9: corruption is caught without the .sha256 sidecar (the zip's own CRC-32) ---------------------------
def _flip(path, offsets):
    data = bytearray(path.read_bytes())
    for i in offsets:
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_without_the_sidecar_are_caught_by_every_reader(tmp_path, capsys):
    import random

    from enat_lightning.checkpointing import checkpoint_problem
    from enat_lightning.fileio import checksum_path

    path = tiny_checkpoint(tmp_path / "copied.ckpt")
    checksum_path(path).unlink()  # scp'd without its sidecar
    size = path.stat().st_size
    random.seed(0)
    _flip(path, random.sample(range(size // 4, size // 2), 400))  # inside the tensors
    with pytest.raises(CheckpointError, match=r"copied.ckpt is corrupted: member .* CRC-32"):
        load_generator(path)
    one_line_error(capsys, ["sample", "--ckpt", str(path), "--labels", "1", "--out", str(tmp_path / "s")],
                   str(path), "corrupted")
    assert "corrupted" in checkpoint_problem(path)  # the training resume path


def test_one_flipped_bit_in_a_tensor_is_caught(tmp_path):
    from enat_lightning.fileio import checksum_path

    path = tiny_checkpoint(tmp_path / "m.ckpt")
    checksum_path(path).unlink()
    import zipfile

    with zipfile.ZipFile(path) as z:  # the first byte of the largest tensor's data
        info = max(z.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + name_len + extra_len] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC-32"):
        load_generator(path)
