"""Every YAML under experiments/ parses (composed as its header says) and builds its model on the meta
device, so no config can rot."""
import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
import yaml

from enat_lightning.models import ENAT, NAT, config_from_dict
from enat_lightning.models.stats import count_parameters_paper
from enat_lightning.module import ENATModule
from enat_lightning.training_cli import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
# experiments/studies/ holds `enat study` tables (not LightningCLI configs); they have their own tests.
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in EXPERIMENTS.rglob("*.yaml") if p.parent.name != "studies")


def composition(path: str) -> list[str]:
    """The -c files of the first `enat fit ...` line in the file's header comment."""
    for line in (REPO / path).read_text().splitlines():
        m = re.match(r"#\s+enat fit (.*)", line)
        if m:
            return re.findall(r"-c (\S+)", m.group(1))
    raise AssertionError(f"{path}: header has no '#   enat fit -c ...' line")


def resolved(files: list[str]) -> dict:
    args = ["fit"] + [a for f in files for a in ("-c", str(REPO / f))] + ["--print_config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_lightning_cli(args) == 0, args
    return yaml.safe_load(out.getvalue())


def build(model_section: dict) -> ENATModule:
    kw = dict(model_section)
    net = kw.pop("net")  # resolved YAML form: {class_path: ..., init_args: {...}}
    assert "class_path" in net, "the resolved config must keep the network class"
    with torch.device("meta"):
        return ENATModule(net=config_from_dict(net), **kw)


def test_every_directory_is_covered():
    names = set(CONFIGS)
    for want in ("enat_s", "enat_b", "enat_l", "enat_l_512", "nat_baseline", "demo", "strategy/ddp", "strategy/fsdp"):
        assert f"experiments/{want}.yaml" in names
    assert len([n for n in names if "/ablations/" in n]) == 12  # Fig. 2 x4, Table 1, Table 2 x3, Table 6 b-e


@pytest.mark.parametrize("path", CONFIGS)
def test_config_parses_and_builds_its_model(path):
    files = composition(path)
    assert path in files, f"{path}: its own compose line does not use it: {files}"
    cfg = resolved(files)
    if "class_path" in cfg["model"]:  # experiments/tokenizers/: a tokenizer run, its own LightningModule
        from enat_lightning.tokenizer_training import VQTokenizerModule

        assert cfg["model"]["class_path"].endswith("VQTokenizerModule"), path
        with torch.device("meta"):
            tok = VQTokenizerModule(**cfg["model"]["init_args"])
        assert sum(p.numel() for p in tok.autoencoder.parameters()) > 0
        return
    module = build(cfg["model"])
    assert isinstance(module.net, (ENAT, NAT)) and sum(p.numel() for p in module.net.parameters()) > 0
    assert all(p.is_meta for p in module.ema.parameters())
    if "/ablations/" in path or "/strategy/" in path:
        base = resolved([f for f in files if f != path])
        assert cfg != base, f"{path} changes nothing"
        if "/ablations/" in path:
            assert cfg["model"] != base["model"], f"{path}: an ablation must change the model or recipe"
            assert cfg["trainer"]["logger"]["init_args"]["name"] == Path(path).stem  # own run directory


@pytest.mark.parametrize("path", [p for p in CONFIGS if "/ablations/" in p])
def test_ablation_header_names_row_hypothesis_and_direction(path):
    text = (REPO / path).read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"(Fig\. 2|Table \d)", header), path
    assert "Hypothesis" in header and "Expected" in header, path
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(body) <= 12, f"{path}: an ablation should be a small diff, got {len(body)} lines"


@pytest.mark.parametrize("path,millions", [("experiments/enat_b.yaml", 219), ("experiments/enat_l.yaml", 574)])
def test_main_models_have_the_paper_size(path, millions):
    module = build(resolved(composition(path))["model"])
    n = count_parameters_paper(module.cfg) / 1e6  # counts the official, unused prev_embedder too
    assert abs(n - millions) / millions < 0.01, n  # paper Table 3 #Params


def test_reuse_settings_match_the_paper_rows():
    def model(path):
        return resolved(composition(path))["model"]

    assert model("experiments/nat_baseline.yaml")["reuse_prob"] == 0.0
    assert model("experiments/enat_s.yaml")["reuse_prob"] == 0.5
    for row in ("table1_disentangled", "table2_8_8", "table2_12_4", "table2_15_1"):
        m = model(f"experiments/ablations/{row}.yaml")
        assert m["reuse_prob"] == 0.0 and m["net"]["init_args"]["reuse_projection"] is False, row
    l512 = resolved(composition("experiments/enat_l_512.yaml"))
    assert l512["model"]["lr"] == 1e-4 and l512["model"]["net"]["init_args"]["grid"] == 32
