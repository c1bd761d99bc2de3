"""The app's logic without a browser: its images are `enat sample`'s, its command line parses back to its
settings, its errors are the CLI's line, and it writes only into its own folder."""
from __future__ import annotations

import shlex

import numpy as np
import pytest
from PIL import Image

from app_helpers import PRESET, png, run_printed_command, tiny_export

from enat_lightning.app import core
from enat_lightning.cli import main, parse
from enat_lightning.errors import UserError


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    return core.open_session(tiny_export(root), None, root / "appout")


def test_session_takes_the_exports_tokenizer_and_sampler_preset(session):
    assert session.preset == PRESET and session.preset_source.endswith("sampler.yaml")
    assert session.tokenizer_spec == session.ckpt  # the bundled tokenizer.safetensors


def test_the_grid_is_what_the_printed_enat_sample_line_writes(session, tmp_path, capsys):
    settings = core.settings_from_form(session.preset, order="halton", guidance="constant", cfg_scale=1.5,
                                       uncond_skip_steps="2")
    r = core.generate_grid(session, "1,2,3", settings, seed=5, per_class=2)
    assert r.labels == [1, 1, 2, 2, 3, 3] and r.images.shape == (6, 16, 16, 3)
    assert "--labels 1,2,3 --per_class 2" in r.command and "--sampler.order halton" in r.command
    assert r.gflops > 0 and r.seconds > 0 and "GFLOPs/image" in r.summary()
    out = run_printed_command(r.command, tmp_path / "cli", capsys)
    assert np.array_equal(png(out / "grid.png"), r.grid)
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], r.images)
    # the printed line parses back to exactly the app's settings
    _, kwargs = parse(shlex.split(r.command)[1:])
    assert kwargs["sampler"] == settings and kwargs["seed"] == 5


def test_the_edit_is_what_the_printed_enat_sample_edit_line_writes(session, tmp_path, capsys):
    grid = core.generate_grid(session, "4", session.preset, seed=1)
    r = core.edit_region(session, grid.images[0], "0,0,8,8", "5,6", session.preset, seed=2)
    assert r.input_path.parent == session.out_dir / "inputs" and r.tokens_edited == 4
    assert r.grid.shape[1] > 3 * 16  # input | two edits
    run_printed_command(r.command, tmp_path / "edits", capsys)
    assert np.array_equal(png(tmp_path / "edits" / f"{r.input_path.stem}_edited.png"), r.grid)
    # an uploaded image of another size is centre-cropped and resized to the model's 16x16 input
    big = np.zeros((40, 60, 3), np.uint8)
    pixels, _ = core.prepare_input(session, big)
    assert pixels.shape == (16, 16, 3)
    assert core.draw_region(pixels, "0,0,8,8")[0, 0].tolist() == [255, 0, 0]


def test_bad_settings_give_the_clis_one_line(session, tmp_path, capsys):
    with pytest.raises(ValueError) as e:
        core.settings_from_form(session.preset, guidance="interval", guidance_interval="")
    rc = main(["sample", "--ckpt", session.ckpt, "--labels", "1", "--out", str(tmp_path / "s"),
               "--sampler.guidance", "interval"])
    assert rc == 2 and capsys.readouterr().err.strip() == core.error_line(e.value)
    with pytest.raises(ValueError, match="outside"):
        core.generate_grid(session, "10,11", session.preset, seed=0)
    with pytest.raises(ValueError, match="region"):
        core.edit_region(session, np.zeros((16, 16, 3), np.uint8), "0,0,99,8", "1", session.preset, seed=0)


def test_no_ckpt_means_the_demo_checkpoint_or_how_to_make_it(tmp_path):
    with pytest.raises(UserError, match="make demo"):
        core.default_checkpoint(tmp_path)
    (tmp_path / core.DEMO_CHECKPOINT).parent.mkdir(parents=True)
    (tmp_path / core.DEMO_CHECKPOINT).write_bytes(b"x")
    assert core.default_checkpoint(tmp_path) == tmp_path / core.DEMO_CHECKPOINT


def test_a_plain_checkpoint_needs_a_tokenizer(tmp_path):
    tiny_export(tmp_path)
    with pytest.raises(UserError, match="--tokenizer"):
        core.open_session(tmp_path / "tiny.ckpt", None, tmp_path / "out")


def test_the_app_writes_only_into_its_folder(tmp_path):
    export_dir = tiny_export(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    s = core.open_session(export_dir, None, tmp_path / "appout")
    g = core.generate_grid(s, "1,2", s.preset, seed=0)
    core.edit_region(s, g.images[0], "0,0,4,4", "3", s.preset, seed=0)
    core.edit_region(s, np.asarray(Image.new("RGB", (20, 20))), "0,0,4,4", "3", s.preset, seed=0)
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.is_relative_to(tmp_path / "appout") for p in new), sorted(new)


def test_a_text_model_samples_captions_like_enat_sample_prompts(tmp_path, capsys):
    import torch

    from app_helpers import DIGITS_TOKENIZER
    from enat_lightning.models import ENAT, ENATConfig
    from enat_lightning.sampling.checkpoint import save_generator_checkpoint

    torch.manual_seed(0)
    cfg = ENATConfig(codebook_size=128, grid=4, width=32, heads=4, enc_depth=1, dec_depth=1, text_dim=12, text_len=6,
                     condition="text")
    ckpt = save_generator_checkpoint(tmp_path / "t2i.ckpt", cfg, ENAT(cfg).state_dict())
    s = core.open_session(ckpt, str(DIGITS_TOKENIZER), tmp_path / "appout", text_encoder="hash:dim=12,length=6")
    r = core.generate_grid(s, "", PRESET, seed=4, per_class=2, captions="a red square\n\na blue sky\n")
    assert r.labels == [0, 0, 1, 1] and "--prompts" in r.command and "--text_encoder" in r.command
    assert (tmp_path / "appout" / "prompts.txt").read_text().splitlines() == ["a red square", "a blue sky"]
    out = run_printed_command(r.command, tmp_path / "cli", capsys)
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], r.images)
    with pytest.raises(UserError, match="one caption per line"):
        core.generate_grid(s, "", PRESET, seed=0, captions="\n")
