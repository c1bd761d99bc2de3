"""Every place that decodes a generator's tokens with a tokenizer refuses a codebook mismatch, with the one
check (``tokenizers.check_codebook_size``): one line naming both, before any sampling, training or feature
network. The generator has 16 codes; the demo tokenizer of data/digits has 128."""
from __future__ import annotations

import pytest
import torch

from enat_lightning.errors import UserError
from enat_lightning.models import ENATConfig, NATConfig, build_model
from enat_lightning.sampling.checkpoint import save_generator_checkpoint
from enat_lightning.sampling.settings import SamplerSettings
from enat_testing import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

G16 = ENATConfig(codebook_size=16, num_classes=10, grid=4, width=32, heads=2, enc_depth=1, dec_depth=1)
MISMATCH = ("has 128 codes but", "codebook_size 16")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(generator checkpoint with 16 codes, NAT checkpoint with 16 codes, 'demo:PATH' of the 128-code tokenizer)."""
    from enat_lightning.demo.data import ensure_demo_data

    d = tmp_path_factory.mktemp("g16")
    torch.manual_seed(0)
    enat = save_generator_checkpoint(d / "g16.ckpt", G16, build_model(G16).state_dict())
    nat_cfg = NATConfig(codebook_size=16, num_classes=10, grid=4, width=32, heads=2, depth=1)
    nat = save_generator_checkpoint(d / "nat16.ckpt", nat_cfg, build_model(nat_cfg).state_dict())
    return enat, nat, f"demo:{ensure_demo_data(dataset='digits').tokenizer}"


def digits_train() -> str:
    from enat_lightning.demo.data import ensure_demo_data

    return str(ensure_demo_data(dataset="digits").train)


def one_line(err: Exception | str) -> str:
    msg = str(err)
    assert "\n" not in msg and all(n in msg for n in MISMATCH), msg
    return msg


def cli_error(capsys, argv: list[str]) -> str:
    from enat_lightning.cli import main

    rc = main(argv)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("enat: error: "), lines
    return one_line(lines[0])


def test_sample(files, tmp_path, capsys):
    ckpt, _, tok = files
    msg = cli_error(capsys, ["sample", "--ckpt", str(ckpt), "--labels", "1", "--tokenizer", tok,
                             "--out", str(tmp_path / "s"), "--no-progress"])
    assert f"--tokenizer {tok}" in msg
    assert not (tmp_path / "s" / "samples.npz").exists()


def test_evaluate_refuses_before_loading_the_feature_network(files, tmp_path, capsys, monkeypatch):
    import enat_lightning.commands.common as common

    def no_features(*a, **k):
        raise AssertionError("the feature network was loaded before the codebook check")

    monkeypatch.setattr(common, "load_features", no_features)
    ckpt, _, tok = files
    msg = cli_error(capsys, ["evaluate", "--ckpt", str(ckpt), "--tokenizer", tok, "--feature", "demo:digits",
                             "--num_samples", "4", "--out", str(tmp_path / "r.json")])
    assert f"the generator {ckpt}" in msg
    assert not (tmp_path / "r.json").exists()


def test_export(files, tmp_path, capsys):
    ckpt, _, tok = files
    cli_error(capsys, ["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "e"), "--tokenizer", tok])
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_app_session(files, tmp_path):
    from enat_lightning.app.core import open_session

    ckpt, _, tok = files
    with pytest.raises(UserError) as e:
        open_session(ckpt, tok, tmp_path / "app")
    one_line(e.value)


def test_fid_callback_refuses_at_setup(files):
    from enat_lightning.callbacks.fid import FIDCallback
    from enat_lightning.module import ENATModule

    with pytest.raises(UserError) as e:  # setup: the start of fit, not the first evaluation
        FIDCallback(feature="demo:digits", tokenizer=files[2]).setup(None, ENATModule(G16), "fit")
    assert "model.net.init_args has codebook_size 16" in one_line(e.value)


def test_data_module_tokenizer(files):
    from enat_lightning.data.datamodule import TokenShardDataModule

    with pytest.raises(UserError) as e:
        TokenShardDataModule(digits_train(), codebook_size=16,
                             tokenizer=files[2]).check_tokenizer(files[2])
    assert "data.codebook_size" in one_line(e.value)


def fid_metric(tok: str):
    """``--metric fid`` with the demo classifier as feature network (no Inception file in tests)."""
    from enat_lightning.studies.study import sample_quality_metric

    return sample_quality_metric("fid", SamplerSettings(steps=2), num_samples=4, fid_stats="demo:digits:val",
                                 tokenizer=tok, feature="demo:digits", metrics="fid")


def test_sample_quality_metric_checks_every_model_it_decodes(files):
    from enat_lightning.sampling.checkpoint import load_generator

    metric = fid_metric(files[2])
    model, _ = load_generator(files[0])
    with pytest.raises(UserError) as e:
        metric(model)
    one_line(e.value)


def test_analyze_attention_metric_refuses_before_any_work(files, tmp_path):
    from enat_lightning.analysis.attention_removal import analyze_attention_removal

    with pytest.raises(UserError) as e:
        # no --data: the demo val split does not fit 16 codes either, but the tokenizer is refused first
        analyze_attention_removal(files[1], tmp_path / "a", removals=["mask_to_visible"],
                                  sample_metric=fid_metric(files[2]))
    one_line(e.value)
    assert not (tmp_path / "a").exists()


def test_study_run_refuses_before_training_a_row(files, tmp_path):
    from enat_lightning.studies.study import load_study, run_study

    study = load_study(REPO / "experiments/studies/fig2_attention_removal.yaml")
    with pytest.raises(UserError) as e:
        run_study(study, tmp_path / "study", overrides=[REPO / "experiments/studies/demo_tiny.yaml"],
                  sets=["model.net.init_args.codebook_size=16"], sample_metric=fid_metric(files[2]))
    assert f"row {study.rows[0].name!r}" in one_line(e.value)
    assert not (tmp_path / "study").exists()  # nothing trained


def test_sampler_zoo(files, tmp_path):
    from enat_lightning.studies.sampler_zoo import load_zoo, run_zoo

    spec = tmp_path / "zoo.yaml"
    spec.write_text("kind: sampler_zoo\nname: z\nbase: {steps: 2}\norders: [confidence]\nguidance: {linear: {}}\n"
                    "evaluation: {num_samples: 4, batch_size: 4, time_samples: 2, time_repeats: 1, "
                    f"feature: 'demo:digits', ref_stats: 'demo:digits:val', tokenizer: '{files[2]}'}}\n")
    with pytest.raises(UserError) as e:
        run_zoo(load_zoo(spec), tmp_path / "out", ckpt=files[0])
    assert "evaluation.tokenizer" in one_line(e.value)
