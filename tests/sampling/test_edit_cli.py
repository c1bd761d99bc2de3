"""`enat sample --edit IMAGE --region X0,Y0,X1,Y1`: tokens outside the region are the input's."""
import json

import numpy as np
import torch
from PIL import Image

from enat_lightning.cli import main
from enat_lightning.models import ENAT, ENATConfig
from enat_lightning.sampling.checkpoint import save_generator_checkpoint
from enat_lightning.sampling.edit import region_token_mask


def test_sample_edit_writes_the_edited_grid_beside_the_input(tmp_path, capsys):
    from enat_lightning.demo.data import DIGITS, NUM_CLASSES, ensure_demo_data
    from enat_lightning.tokenizers.demo import DemoTokenizer

    paths = ensure_demo_data(dataset=DIGITS)  # the tests' small digits set: 16x16 pixels, 4x4 tokens
    torch.manual_seed(0)
    cfg = ENATConfig(codebook_size=DIGITS.codebook_size, num_classes=NUM_CLASSES, grid=DIGITS.grid, width=32, heads=2, enc_depth=1,
                     dec_depth=1)
    ckpt = save_generator_checkpoint(tmp_path / "m.ckpt", cfg, ENAT(cfg).state_dict())
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    spec = json.dumps({"class_path": "enat_lightning.tokenizers.DemoTokenizer", "init_args": {"path": str(paths.tokenizer)}})
    rc = main(["sample", "--ckpt", str(ckpt), "--tokenizer", spec, "--edit", str(tmp_path / "in.png"),
               "--region", "4,4,12,8", "--labels", "1,2,3", "--steps", "3", "--seed", "1"])
    assert rc == 0 and "3 edits" in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "in_edited.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3
    z = np.load(tmp_path / "in_edited.npz")
    mask = region_token_mask((4, 4, 12, 8), (16, 16), (4, 4)).numpy()
    assert z["token_mask"].tolist() == mask.tolist() and int(mask.sum()) == 2
    tok = DemoTokenizer.load(paths.tokenizer)
    src = tok.encode(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    assert (z["source_tokens"] == src).all()
    for t in z["tokens"]:
        assert (t[~mask] == src[~mask]).all()
    assert z["labels"].tolist() == [1, 2, 3]


def test_edit_flags_need_each_other_and_a_tokenizer(tmp_path, capsys):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in.png")
    assert main(["sample", "--ckpt", "x.ckpt", "--edit", str(tmp_path / "in.png")]) == 2
    assert "--edit IMAGE and --region X0,Y0,X1,Y1 go together" in capsys.readouterr().err
    assert main(["sample", "--ckpt", "x.ckpt", "--edit", str(tmp_path / "in.png"), "--region", "0,0,4,4",
                 "--labels", "1"]) == 2
    assert "--edit needs --tokenizer" in capsys.readouterr().err
    assert main(["sample", "--ckpt", "x.ckpt", "--labels", "1"]) == 2
    assert "--out is required" in capsys.readouterr().err
