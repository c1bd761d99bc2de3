"""sample_to_dir (Trainer.predict + ChunkWriter): chunked, resumable, decoded sample folders, with
per-sample seeds and the overwrite rules (tiny official ENAT + tiny VQGAN)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from enat_lightning.models import from_official
from enat_lightning.errors import UserError
from enat_lightning.prediction import sample_to_dir
from enat_lightning.sampling import SamplerSettings, generate
from enat_lightning.sampling.runner import SampleRun, class_labels
from enat_lightning.seeding import sample_generators
from enat_lightning.tokenizers import VQGAN

SETTINGS = SamplerSettings(steps=4, cfg_scale=2.0, mask_temp=1.5, samp_temp=2.0)
RUN = SampleRun(seed=7, batch_size=4)
LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]  # 10 = unconditional


@pytest.fixture(scope="module")
def model(official_enat):
    return from_official(official_enat["config"], official_enat["state_dict"])


@pytest.fixture(scope="module")
def vqgan(official_vqgan):
    c = official_vqgan["config"]
    return VQGAN.from_official(c["ddconfig"], c["n_embed"], c["embed_dim"],
                               {k: v.float() for k, v in official_vqgan["state_dict"].items()})


def test_writes_grid_npz_pngs_matching_generate(tmp_path, model, vqgan):
    labels = [0, 3, 7, 9, 10, 2]  # 10 = unconditional; chunks [0:4], [4:6]
    r = sample_to_dir(model, labels, tmp_path, SETTINGS, vqgan, run=RUN, save_images=True, progress=False)
    assert r["num_samples"] == 6 and r["decoded"] and r["resumed"] == 0
    with np.load(tmp_path / "samples.npz") as z:
        arr, got_labels, tokens = z["arr_0"], z["labels"], z["tokens"]
    assert arr.dtype == np.uint8 and arr.shape == (6, 64, 64, 3)
    assert got_labels.tolist() == labels and tokens.shape == (6, 4, 4)
    # chunk 1 = samples 4..5, each drawn from its own generator seeded by (seed, sample index)
    ids = generate(model, torch.tensor(labels[4:6]), steps=4, cfg_scale=2.0, mask_temp=1.5, samp_temp=2.0,
                   generator=sample_generators(7, [4, 5]))
    assert np.array_equal(tokens[4:6], ids.numpy())
    with torch.no_grad():
        dec = vqgan.decode(ids).clamp(0, 1).mul(255).add(0.5).floor().to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(arr[4:6], dec.numpy())
    grid = Image.open(tmp_path / "grid.png")
    grid.load()
    assert grid.mode == "RGB" and grid.size[0] > 64 * 3
    pngs = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(pngs) == 6 and pngs[-2:] == ["000004_c10.png", "000005_c2.png"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_interrupted_run_resumes_where_it_stopped(tmp_path, model):
    # tokens only (decoding is covered above and by tests/commands/test_sample.py) to stay fast
    labels, run = LABELS[:6], SampleRun(seed=7, batch_size=2)  # 3 chunks
    full = sample_to_dir(model, labels, tmp_path / "full", SETTINGS, run=run, progress=False)

    def stop_after_first(i):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit):  # Lightning's graceful shutdown on Ctrl-C exits with status 1
        sample_to_dir(model, labels, tmp_path / "run", SETTINGS, run=run, progress=False, on_chunk=stop_after_first)
    chunks = sorted(p.name for p in (tmp_path / "run" / "chunks").glob("chunk_*.npz"))
    assert chunks == ["chunk_000000.npz"] and not (tmp_path / "run" / "samples.npz").exists()
    mtime = (tmp_path / "run" / "chunks" / "chunk_000000.npz").stat().st_mtime_ns
    r = sample_to_dir(model, labels, tmp_path / "run", SETTINGS, run=run, progress=False)
    assert r["resumed"] == 1 and full["resumed"] == 0
    assert (tmp_path / "run" / "chunks" / "chunk_000000.npz").stat().st_mtime_ns == mtime  # not redone
    with np.load(tmp_path / "full" / "samples.npz") as a, np.load(tmp_path / "run" / "samples.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("labels", "tokens"))


def test_resume_with_other_settings_is_refused(tmp_path, model):
    sample_to_dir(model, LABELS[:2], tmp_path, SETTINGS, run=RUN, progress=False)
    other = SamplerSettings(**{**SETTINGS.__dict__, "cfg_scale": 3.0})
    with pytest.raises(UserError, match=r"other settings \(differs in \['settings'\]\).*--overwrite"):
        sample_to_dir(model, LABELS[:2], tmp_path, other, run=RUN, progress=False)
    manifest = json.loads((tmp_path / "chunks" / "manifest.json").read_text())
    assert manifest["settings"]["cfg_scale"] == 2.0


def test_without_tokenizer_saves_tokens_only(tmp_path, model):
    r = sample_to_dir(model, LABELS[:3], tmp_path, SETTINGS, run=RUN, progress=False)
    assert not r["decoded"] and not (tmp_path / "grid.png").exists()
    with np.load(tmp_path / "samples.npz") as z:
        assert sorted(z.files) == ["labels", "tokens"]


def test_a_sample_does_not_depend_on_its_batch(tmp_path, model):
    # per-sample seeds: batch size 4 and batch size 3 cut the samples differently, same tokens
    a = sample_to_dir(model, LABELS, tmp_path / "a", SETTINGS, run=RUN, progress=False)
    sample_to_dir(model, LABELS, tmp_path / "b", SETTINGS, run=SampleRun(seed=7, batch_size=3), progress=False)
    assert a["devices"] == ["cpu"] and a["world_size"] == 1
    with np.load(tmp_path / "a" / "samples.npz") as x, np.load(tmp_path / "b" / "samples.npz") as y:
        assert np.array_equal(x["tokens"], y["tokens"]) and x["labels"].tolist() == LABELS
    c = sample_to_dir(model, LABELS, tmp_path / "c", SETTINGS, run=SampleRun(seed=8, batch_size=4), progress=False)
    with np.load(tmp_path / "a" / "samples.npz") as x, np.load(tmp_path / "c" / "samples.npz") as z:
        assert not np.array_equal(x["tokens"], z["tokens"])  # another seed, other samples
    assert c["num_samples"] == len(LABELS)


def test_class_labels():
    assert class_labels(3, per_class=2) == [0, 0, 1, 1, 2, 2]
    assert class_labels(10, [4, 1], 2) == [4, 4, 1, 1]
    assert class_labels(10, [4, 1]) == [4, 1]
    with pytest.raises(ValueError, match="outside"):
        class_labels(10, [11])
    with pytest.raises(ValueError, match="--labels and/or --per-class"):
        class_labels(10)


def test_outputs_of_another_run_are_refused_unless_overwrite(tmp_path, model, vqgan):
    out = tmp_path / "s"
    sample_to_dir(model, [0, 1, 2], out, SETTINGS, vqgan, run=RUN, save_images=True, progress=False)
    (out / "notes.txt").write_text("mine")  # not an output of ours: never blocks, never removed
    before = (out / "samples.npz").read_bytes()
    # the case: chunks/ deleted as advised, rerun with other settings -> stale PNGs must not stay
    for p in (out / "chunks").iterdir():
        p.unlink()
    other = SampleRun(seed=8, batch_size=4)
    with pytest.raises(UserError, match=r"samples\.npz exists and no .*manifest\.json says what made it.*--overwrite"):
        sample_to_dir(model, [4, 5], out, SETTINGS, vqgan, run=other, progress=False)
    assert (out / "samples.npz").read_bytes() == before and len(list((out / "images").iterdir())) == 3
    r = sample_to_dir(model, [4, 5], out, SETTINGS, vqgan, run=other, overwrite=True, progress=False)
    assert r["num_samples"] == 2 and r["resumed"] == 0
    assert not (out / "images").exists()  # the 3 PNGs of the earlier run are gone
    with np.load(out / "samples.npz") as z:
        assert z["labels"].tolist() == [4, 5]
    assert (out / "notes.txt").read_text() == "mine"
    # same command, same settings: resumes (no --overwrite needed); other settings: refused, naming the key
    assert sample_to_dir(model, [4, 5], out, SETTINGS, vqgan, run=other, progress=False)["resumed"] == 1
    with pytest.raises(UserError, match=r"differs in \['run'\]"):
        sample_to_dir(model, [4, 5], out, SETTINGS, vqgan, run=RUN, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        sample_to_dir(model, [4, 5], tmp_path / "file", SETTINGS, run=RUN, progress=False)


def test_a_huge_batch_is_refused_before_anything_is_allocated(tmp_path, model, monkeypatch):
    from enat_lightning.sampling import runner

    with pytest.raises(UserError, match=r"--batch-size 1000000000 needs at least .* GiB on cpu .* use --batch-size \d+"):
        runner.check_memory(model.cfg, 10**9, SETTINGS, torch.device("cpu"))
    runner.check_memory(model.cfg, 4, SETTINGS, torch.device("cpu"))  # a small one passes
    monkeypatch.setattr(runner, "free_bytes", lambda device: 2**20)  # 1 MiB free
    with pytest.raises(UserError, match="--batch-size 8 needs at least"):
        sample_to_dir(model, list(range(8)), tmp_path / "o", SETTINGS, run=SampleRun(batch_size=8), progress=False)
    assert not (tmp_path / "o").exists()  # refused before writing anything
    with pytest.raises(UserError, match="batch size must be >= 1"):
        SampleRun(batch_size=0)


def test_device_flag_maps_to_the_trainer_and_a_missing_gpu_is_one_line():
    from enat_lightning.prediction import device_options

    assert device_options(None) == {"accelerator": "auto", "devices": "auto"}  # every GPU (DDP), else the CPU
    assert device_options("cpu") == {"accelerator": "cpu", "devices": 1}
    with pytest.raises(UserError, match="cpu, cuda or cuda:K"):
        device_options("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda:1: no CUDA GPU .* use --device cpu"):
            device_options("cuda:1")
