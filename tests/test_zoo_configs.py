"""The ENAT configs of the tokenizer zoo (experiments/zoo/): each names its tokenizer once per consumer (grid
callback, data), has the tokenizer's codebook size and grid, and `enat flops` counts it."""
from __future__ import annotations

import json

import pytest

from enat_lightning.cli import main
from enat_lightning.evaluation.flops import vq_decoder_gmacs
from test_configs import REPO, composition, resolved

ZOO = {  # config -> (tokenizer class, codebook size, grid at 256 px, `enat flops --vq`)
    "experiments/zoo/enat_l_llamagen_vq16.yaml": ("LlamaGenVQ", 16384, 16, "llamagen-vq-16"),
    "experiments/zoo/enat_l_amused256.yaml": ("DiffusersVQ", 8192, 16, "none"),
}


def test_every_zoo_config_is_listed():
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "experiments/zoo").glob("*.yaml")} == set(ZOO)


@pytest.mark.parametrize("path", sorted(ZOO))
def test_zoo_config_matches_its_tokenizer_and_flops_runs(path, capsys):
    cls, codes, grid, vq = ZOO[path]
    cfg = resolved(composition(path))
    net = cfg["model"]["net"]["init_args"]
    assert (net["codebook_size"], net["grid"]) == (codes, grid)
    grid_cb = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("SampleGrid"))
    data_tok = cfg["data"]["init_args"]["tokenizer"]
    assert grid_cb["init_args"]["tokenizer"] == data_tok and data_tok["class_path"].endswith(cls)
    assert f"enat flops -c {path} --vq {vq}" in (REPO / path).read_text()
    capsys.readouterr()
    # 2 steps: that the count runs is checked, not its size
    assert main(["flops", "-c", str(REPO / path), "--vq", vq, "--steps", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["config"]["codebook_size"] == codes and len(rep["per_step"]) == 2 and rep["gmacs_total"] > 0
    assert (rep["gmacs_vq_decoder"] > 0) == (vq != "none")


def test_llamagen_decoder_macs():
    """VQ-16's decoder at 16x16 tokens: more than the MaskGIT VQGAN's (attention, one more block per level)."""
    lg = vq_decoder_gmacs(16, "llamagen-vq-16")
    assert lg > vq_decoder_gmacs(16, "maskgit-f16") > 0
    assert vq_decoder_gmacs(32, "llamagen-vq-16") > 4 * lg * 0.99  # grows with the grid (quadratic attention)
    with pytest.raises(ValueError, match="llamagen-vq-16"):
        vq_decoder_gmacs(16, "llamagen-vq-99")
