"""`enat export`: the folder round-trips (identical samples), every --ckpt command reads it, damage is one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from enat_lightning.cli import main
from enat_lightning.commands.export import export
from enat_lightning.models import ENAT, NAT, ENATConfig, NATConfig, build_model
from enat_lightning.models.pretrained import MANIFEST, verify_export
from enat_lightning.sampling.checkpoint import load_generator, save_generator_checkpoint
from enat_lightning.sampling.runner import sample_chunk
from enat_lightning.sampling.settings import SamplerSettings

CFG = ENATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=2, enc_depth=1, dec_depth=1)
DIGITS_TOKENIZER = str(Path(__file__).resolve().parents[2] / "data" / "digits" / "tokenizer.npz")  # 4x4 tokens, 128 codes


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """`enat argv` in process: exit 2 and exactly one stderr line `enat: error: ...` holding the needles."""
    rc = main(argv)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("enat: error: "), lines
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    net, ema = ENAT(CFG), ENAT(CFG)  # distinct EMA and raw weights: the export must take the EMA copy
    state = {**{f"net.{k}": v for k, v in net.state_dict().items()}, **{f"ema.{k}": v for k, v in ema.state_dict().items()}}
    path = save_generator_checkpoint(tmp_path / "m.ckpt", CFG, ema.state_dict())
    raw = torch.load(path, weights_only=True)
    raw["state_dict"] = state
    torch.save(raw, path)
    path.with_name(path.name + ".sha256").unlink()
    return path


def test_round_trip_gives_identical_samples_for_the_same_seed(ckpt, tmp_path):
    out = tmp_path / "exported"
    r = export(ckpt, out, sampler=SamplerSettings(steps=4, cfg_scale=1.0), tokenizer=DIGITS_TOKENIZER,
               with_tokenizer=True)
    assert {"model.safetensors", "config.json", "sampler.yaml", "tokenizer.json", "tokenizer.safetensors",
            "README.md", MANIFEST} <= set(r["files"])
    assert json.loads((out / "config.json").read_text())["class_path"] == "enat_lightning.models.ENATConfig"
    a, _ = load_generator(ckpt)
    b, cfg = load_generator(out)  # the one checkpoint loader reads the folder
    c = ENAT.from_pretrained(out)
    assert cfg == CFG
    settings = SamplerSettings(steps=4, cfg_scale=1.0)
    labels = torch.tensor([1, 2, 3])
    ref = sample_chunk(a, None, labels, 0, settings, seed=7)["tokens"]
    for model in (b, c):
        assert torch.equal(sample_chunk(model, None, labels, 0, settings, seed=7)["tokens"], ref)
    for k, v in a.state_dict().items():  # EMA weights, bit for bit
        assert torch.equal(v, c.state_dict()[k])


def test_save_pretrained_and_from_pretrained_check_the_class(tmp_path):
    torch.manual_seed(0)
    nat_cfg = NATConfig(
        codebook_size=64, num_classes=10, grid=4, width=32, heads=2, depth=1)
    nat = build_model(nat_cfg)
    nat.save_pretrained(tmp_path / "nat")
    back = NAT.from_pretrained(tmp_path / "nat")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in nat.state_dict().items())
    with pytest.raises(ValueError, match="holds a NAT"):
        ENAT.from_pretrained(tmp_path / "nat")


def test_every_ckpt_command_takes_the_folder_without_trusting_it(ckpt, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--steps", "3", "--cfg", "1.0",
                 "--tokenizer", DIGITS_TOKENIZER, "--with_tokenizer"]) == 0
    capsys.readouterr()
    assert "steps: 3" in (out / "sampler.yaml").read_text()
    # sample with the folder as model, tokenizer and (-c) sampler preset; the same as the .ckpt
    for name, model in (("a", ckpt), ("b", out)):
        assert main(["sample", "--ckpt", str(model), "--labels", "1,2", "--tokenizer", str(out), "--out",
                     str(tmp_path / name), "-c", str(out / "sampler.yaml"), "--seed", "3", "--no_progress"]) == 0
    za, zb = np.load(tmp_path / "a" / "samples.npz"), np.load(tmp_path / "b" / "samples.npz")
    assert np.array_equal(za["tokens"], zb["tokens"]) and np.array_equal(za["arr_0"], zb["arr_0"])
    assert main(["flops", "--ckpt", str(out), "--json", "--steps", "3"]) == 0


def test_model_card_names_architecture_parameters_flops_and_metrics(ckpt, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"fid": 12.5, "num_samples": 500, "feature": "demo", "seed": 0,
                                   "sampler": SamplerSettings(steps=5, cfg_scale=2.0).to_dict(),
                                   "made_by": {"command": "evaluate"}}))
    r = export(ckpt, tmp_path / "e", metrics=[results])
    assert r["sampler"]["steps"] == 5 and "evaluated with" in r["sampler_source"]  # the metrics file's settings
    card = (tmp_path / "e" / "README.md").read_text()
    from enat_lightning.models.stats import count_parameters

    assert f"{count_parameters(CFG):,} parameters" in card and "GFLOPs per image" in card
    assert "| evaluate | 12.5 |" in card and "num_samples `500`" in card
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())[0]["metrics"][0]["fid"] == 12.5


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_altered_file_is_one_line_naming_it(ckpt, tmp_path, capsys, damage):
    out = tmp_path / "e"
    export(ckpt, out)
    if damage == "missing":
        (out / "model.safetensors").unlink()
    else:
        data = bytearray((out / "model.safetensors").read_bytes())
        data[-3] ^= 0xFF
        (out / "model.safetensors").write_bytes(bytes(data))
    line = one_line_error(capsys, ["sample", "--ckpt", str(out), "--labels", "1", "--out", str(tmp_path / "s")],
                          "model.safetensors", "missing" if damage == "missing" else "altered")
    assert "Traceback" not in line


def test_outputs_are_refused_unless_an_earlier_export_with_overwrite(ckpt, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    one_line_error(capsys, ["export", "--ckpt", str(ckpt), "--out", str(other), "--overwrite"], "not an export")
    assert (other / "notes.txt").read_text() == "mine"
    out = tmp_path / "e"
    export(ckpt, out)
    one_line_error(capsys, ["export", "--ckpt", str(ckpt), "--out", str(out)], "--overwrite")
    first = verify_export(out)["files"]
    export(ckpt, out, overwrite=True, sampler=SamplerSettings(steps=2))
    assert verify_export(out)["files"]["sampler.yaml"] != first["sampler.yaml"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    (tmp_path / "empty").mkdir()
    export(ckpt, tmp_path / "empty")  # an empty folder is fine
    one_line_error(capsys, ["sample", "--ckpt", str(other), "--labels", "1", "--out", str(tmp_path / "s")],
                   "not an export")
