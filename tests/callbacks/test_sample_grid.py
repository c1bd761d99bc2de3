import lightning.pytorch as pl
import pytest
import torch
from PIL import Image

from enat_lightning.sampling.settings import SamplerSettings
from enat_lightning.callbacks.sample_grid import SampleGrid, heatmap, save_png, tile
from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.errors import UserError
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule


def test_tile_and_heatmap_shapes(tmp_path):
    ids = torch.tensor([[[0, 31], [16, 31]]] * 3)  # (B, h, w)
    img = heatmap(ids, 32, scale=4)  # (B, 3, 8, 8)
    assert img.shape == (3, 3, 8, 8) and img.min() == 0 and img.max() == 1
    grid = tile(img, nrow=2, pad=1)  # 2 rows of 2 cells
    assert grid.shape == (3, 2 * 9 + 1, 2 * 9 + 1)
    assert grid[:, 0, :].eq(1).all()  # white padding
    path = save_png(grid, tmp_path / "g.png")
    assert Image.open(path).size == (19, 19) and not list(tmp_path.glob(".*tmp"))


def demo_spec(path) -> dict:
    return {"class_path": "enat_lightning.tokenizers.DemoTokenizer", "init_args": {"path": str(path)}}


def test_missing_tokenizer_file_fails_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SampleGrid.*tokenizer.*nope\.ckpt"):
        SampleGrid(tokenizer=str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        SampleGrid(tokenizer=demo_spec(tmp_path / "nope.npz"))


def test_logs_a_heatmap_grid_every_n_steps(tmp_path):
    cfg = ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)
    cb = SampleGrid(every_n_steps=2, num_samples=4, sampler=SamplerSettings(steps=4))
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="", version="")
    tr = pl.Trainer(accelerator="cpu", max_steps=4, logger=logger, callbacks=[cb], enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    tr.fit(ENATModule(cfg, warmup_steps=0), SyntheticTokenDataModule(num_classes=4, codebook_size=32, grid=4,
                                                                     num_train=64, batch_size=8))
    pngs = sorted((tmp_path / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step_00000002.png", "step_00000004.png"]
    assert Image.open(pngs[0]).size == (2 * (32 + 2) + 2,) * 2  # 2 x 2 heatmaps of 4x4 tokens x 8 px
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path)).Reload()
    assert "samples" in events.Tags()["images"]


def test_decodes_through_the_demo_tokenizer():
    from enat_lightning.demo.data import ensure_demo_data

    paths = ensure_demo_data(dataset="digits")  # seconds; built from data bundled with scikit-learn
    cfg = ENATConfig(codebook_size=128, num_classes=10, grid=4, width=32, heads=2, enc_depth=1, dec_depth=1)
    module = ENATModule(cfg)
    cb = SampleGrid(num_samples=3, nrow=3, sampler=SamplerSettings(steps=2), tokenizer=demo_spec(paths.tokenizer))
    cb.setup(None, module, "fit")
    grid = cb.sample_grid(module)
    assert grid.shape == (3, 16 + 4, 3 * (16 + 2) + 2)  # 16x16 px images
    assert 0 <= grid.min() and grid.max() <= 1
    bad = SampleGrid(tokenizer=demo_spec(paths.tokenizer))
    with pytest.raises(UserError, match="has 128 codes but model.net.init_args has codebook_size 64"):
        bad.setup(None, ENATModule(ENATConfig(codebook_size=64, num_classes=10, grid=4, width=32, heads=2,
                                              enc_depth=1, dec_depth=1)), "fit")


def test_text_models_sample_their_prompts():
    text = ENATConfig(codebook_size=32, grid=4, width=32, heads=2, enc_depth=1, dec_depth=1, condition="text",
                      text_dim=12, text_len=6)
    module = ENATModule(text)
    cb = SampleGrid(num_samples=3, nrow=3, sampler=SamplerSettings(steps=2), prompts=["a cat", "a dog"], text_encoder="hash:dim=12,length=6")
    cb.setup(None, module, "fit")
    grid = cb.sample_grid(module)
    assert grid.shape == (3, 32 + 4, 3 * (32 + 2) + 2)  # three 4x4 heatmaps (prompts cycled)
    with pytest.raises(ValueError, match="text model.*prompts"):
        SampleGrid(num_samples=2).setup(None, module, "fit")
    with pytest.raises(ValueError, match="prompts need a text model"):
        cb.setup(None, ENATModule(ENATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2,
                                             enc_depth=1, dec_depth=1)), "fit")
    with pytest.raises(ValueError, match="go together"):
        SampleGrid(prompts=["a cat"])
