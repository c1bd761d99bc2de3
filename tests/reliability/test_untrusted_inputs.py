"""A data folder or config someone sends you never runs code (issue 25, item 1): shard names in a manifest are
plain file names in its folder, and commands that only read a config import nothing outside the package."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from commands_helpers import one_line_error
from enat_lightning.data.format import BadDataError, Sample
from enat_lightning.data.reader import resolve_manifest
from enat_lightning.data.writer import ShardSetWriter


def tiny_shards(out: Path, n: int = 4) -> Path:
    w = ShardSetWriter(out, {"test": str(out)}, codebook_size=16, latent_side=4, num_classes=2,
                       tokenizer={"kind": "test"}, has_flip=False)
    w.add_shard([Sample(key=f"k{i}", tokens=np.full((4, 4), i), label=i % 2) for i in range(n)])
    w.finish()
    return out


def poison(folder: Path, name: str) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m["shards"][0]["name"] = name
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("name", ["pipe:touch {pwned}; cat {shard}", "https://example.com/val-000000.tar",
                                  "../other/val-000000.tar", "{shard}", "sub/val.tar", "file:{shard}"])
def test_a_shard_name_from_a_manifest_is_a_plain_file_name(tmp_path, name):
    folder = tiny_shards(tmp_path / "evil")
    pwned = tmp_path / "PWNED"
    poison(folder, name.format(pwned=pwned, shard=folder / "shard-000000.tar"))
    with pytest.raises(BadDataError, match="not a plain file name"):
        resolve_manifest(str(folder))
    assert not pwned.exists()


def test_fid_stats_on_a_poisoned_manifest_runs_nothing(tmp_path, capsys):
    folder = tiny_shards(tmp_path / "evil")
    pwned = tmp_path / "PWNED"
    poison(folder, f"pipe:touch {pwned}; cat {folder / 'shard-000000.tar'}")
    one_line_error(capsys, ["fid-stats", "--shards", str(folder), "--tokenizer", "demo", "--feature", "demo",
                            "--out", str(tmp_path / "s.npz")], "not a plain file name", "pipe:")
    assert not pwned.exists()


def test_plain_names_still_read(tmp_path):
    folder = tiny_shards(tmp_path / "ok")
    m, urls, _ = resolve_manifest(str(folder))
    assert m.sample_count == 4 and urls == [f"{folder}/shard-000000.tar"]


def test_flops_reads_a_config_without_importing_user_code(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent("""\
        model:
          net:
            class_path: enat_lightning.models.ENATConfig
            init_args: {codebook_size: 32, num_classes: 4, grid: 4, width: 32, heads: 2, enc_depth: 2, dec_depth: 1}
        trainer:
          callbacks:
            - class_path: evilmod.Thing
        """))
    one_line_error(capsys, ["flops", "-c", str(cfg)], "evilmod.Thing", "--import_code", "trainer.callbacks")
    assert not marker.exists()


@pytest.mark.parametrize("text, what", [("", "is empty"), ("- a\n- b\n", "not a mapping")])
def test_a_config_that_is_empty_or_not_a_mapping_is_one_line(tmp_path, capsys, text, what):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    one_line_error(capsys, ["flops", "-c", str(cfg)], str(cfg), what)
