"""Issue 14.1 / 14.7 / 14.8: one checkpoint loader (weights_only, checksum verified, one-line errors) behind every
command that reads a checkpoint. A checkpoint carrying a pickle payload must never run it."""
from __future__ import annotations

import pathlib

import pytest
import torch
from commands_helpers import TINY_ENAT, TINY_NAT, one_line_error, tiny_checkpoint

from enat_lightning.cli import main
from enat_lightning.errors import UserError
from enat_lightning.sampling.checkpoint import (generator_config, load_checkpoint_dict, load_generator,
                                                net_to_yaml_form)

REPO = pathlib.Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this object creates the marker file (stands for any code a hostile file could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    good = tiny_checkpoint(d / "good.ckpt")
    nat = tiny_checkpoint(d / "nat.ckpt", TINY_NAT)
    marker = d / "PWNED"
    ck = torch.load(nat, weights_only=True)
    ck["evil"] = Payload(marker)
    torch.save(ck, d / "payload.ckpt")
    torch.save({"evil": Payload(marker), **ck["state_dict"]}, d / "payload_nnet.pth")  # an "official" file
    return {"dir": d, "good": good, "nat": nat, "payload": d / "payload.ckpt",
            "payload_nnet": d / "payload_nnet.pth", "marker": marker}


def _commands(f, tmp):
    p = str(f["payload"])
    return {
        "sample": ["sample", "--ckpt", p, "--labels", "1", "--out", str(tmp / "s")],
        "evaluate": ["evaluate", "--ckpt", p, "--tokenizer", "demo", "--feature", "demo", "--num_samples", "2"],
        "flops": ["flops", "--ckpt", p],
        "analyze similarity": ["analyze", "similarity", "--ckpt", p, "--out", str(tmp / "a")],
        "analyze attention-maps": ["analyze", "attention-maps", "--ckpt", p, "--out", str(tmp / "b")],
        "analyze attention": ["analyze", "attention", "--ckpt", p, "--out", str(tmp / "c")],
        "import-official": ["import-official", "--nnet", str(f["payload_nnet"]), "--preset", "enat_s",
                            "--out", str(tmp / "x.ckpt")],
        "sample official": ["sample", "--preset", "enat_s", "--official_weights", str(f["payload_nnet"]),
                            "--labels", "1", "--out", str(tmp / "o")],
    }


@pytest.mark.parametrize("name", ["sample", "evaluate", "flops", "analyze similarity", "analyze attention-maps",
                                  "analyze attention", "import-official", "sample official"])
def test_payload_checkpoint_is_refused_by_every_command(files, tmp_path, capsys, name):
    argv = _commands(files, tmp_path)[name]
    line = one_line_error(capsys, argv, "refused", "pickled Python objects", "--trust_checkpoint")
    assert "weights_only=False" not in line
    assert not files["marker"].exists(), f"`enat {name}` ran the checkpoint's payload"


def test_payload_row_checkpoint_is_refused_by_study_run(files, tmp_path, capsys):
    from enat_lightning.studies.study import load_study, slug

    spec = REPO / "experiments/studies/fig2_attention_removal.yaml"
    import json

    from enat_lightning.fileio import OUTPUT_RECORD

    study = load_study(spec)
    row = study.rows[0].name
    (tmp_path / slug(row)).mkdir()  # this study's folder (its record: a rerun resumes it) with a row checkpoint
    (tmp_path / OUTPUT_RECORD).write_text(json.dumps({"made_by": {"command": "enat study run", "study": study.name}}))
    (tmp_path / slug(row) / "final.ckpt").write_bytes(files["payload"].read_bytes())  # an existing row: not retrained
    one_line_error(capsys, ["study", "run", str(spec), "--rows", row, "--out", str(tmp_path)], "refused",
                   "final.ckpt")
    assert not files["marker"].exists()


def test_trust_flag_loads_a_file_with_python_objects(files, tmp_path, capsys):
    ck = torch.load(files["good"], weights_only=True)
    ck["note"] = pathlib.PurePosixPath("made/by/me")  # harmless, but not a tensor: weights_only refuses it
    torch.save(ck, tmp_path / "mine.ckpt")
    one_line_error(capsys, ["flops", "--ckpt", str(tmp_path / "mine.ckpt"), "--json"], "--trust_checkpoint")
    assert main(["flops", "--ckpt", str(tmp_path / "mine.ckpt"), "--json", "--trust_checkpoint"]) == 0
    assert '"gmacs_total"' in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_unreadable_checkpoints_are_one_line_naming_the_file(files, tmp_path, capsys, kind):
    import os

    data = files["good"].read_bytes()
    bad = tmp_path / f"{kind}.ckpt"
    bad.write_bytes({"empty": b"", "truncated": data[:len(data) // 2], "random": os.urandom(4096)}[kind])
    for argv in (["flops", "--ckpt", str(bad)], ["sample", "--ckpt", str(bad), "--labels", "1", "--out",
                                                   str(tmp_path / "o")]):
        line = one_line_error(capsys, argv, str(bad))
        assert "weights_only" not in line and ("enat fit" in line or "copy it again" in line)


def test_flipped_bytes_fail_the_checksum_naming_the_file(files, tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "c.ckpt")
    assert (tmp_path / "c.ckpt.sha256").is_file()  # written at save
    data = bytearray(ck.read_bytes())
    for i in range(len(data) - 2000, len(data) - 1600):  # inside the tensor data, the zip stays readable
        data[i] ^= 0xFF
    ck.write_bytes(bytes(data))
    one_line_error(capsys, ["flops", "--ckpt", str(ck)], "c.ckpt is corrupted", "sha256")
    with pytest.raises(UserError, match="corrupted"):
        load_generator(ck)


def test_old_and_new_config_forms_load(files, tmp_path):
    ck = torch.load(files["good"], weights_only=True)
    assert ck["hyper_parameters"]["net"] == net_to_yaml_form(TINY_ENAT)  # written in the one form
    ck["hyper_parameters"]["net"] = TINY_ENAT.to_dict()  # checkpoints written before the change
    torch.save(ck, tmp_path / "old.ckpt")
    for path in (files["good"], tmp_path / "old.ckpt"):
        assert generator_config(load_checkpoint_dict(path), path) == TINY_ENAT
        model, cfg = load_generator(path)
        assert cfg == TINY_ENAT
