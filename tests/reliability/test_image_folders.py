"""Folders and images are read as torchvision's ImageFolder does, or refused naming the file (issue 25, item 6)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from enat_lightning.data.tokenize import list_imagefolder, load_image, to_rgb
from enat_lightning.errors import UserError


def _folder(root, classes=("cat", "dog")):
    for c in classes:
        (root / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(root / c / "a.png")
    return root


def test_an_empty_hidden_folder_is_refused_not_counted_as_a_class(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / ".ipynb_checkpoints").mkdir()
    with pytest.raises(UserError, match=r"\.ipynb_checkpoints holds no images"):
        list_imagefolder(root)


def test_labels_follow_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    root = _folder(tmp_path / "imgs", ("b", "a", "c"))
    items, classes = list_imagefolder(root)
    ref = ImageFolder(str(root))
    assert classes == ref.classes and items == [(p, y) for p, y in ref.samples]


def test_a_symlink_loop_is_refused_naming_it(tmp_path):
    root = _folder(tmp_path / "imgs")
    os.symlink(root / "cat", root / "cat" / "again")
    with pytest.raises(UserError, match="symlink loop"):
        list_imagefolder(root)


@pytest.mark.parametrize("mode, value, expected", [("I;16", 65535, 255), ("I;16", 32768, 128), ("I", 1000, 4),
                                                   ("F", 0.5, 128), ("L", 200, 200)])
def test_every_pil_mode_keeps_its_brightness(mode, value, expected):
    arr = np.full((4, 4), value, dtype={"I;16": np.uint16, "I": np.int32, "F": np.float32, "L": np.uint8}[mode])
    im = Image.fromarray(arr, mode=mode) if mode != "I;16" else Image.fromarray(arr).convert("I;16")
    rgb = np.asarray(to_rgb(im))
    assert rgb.shape == (4, 4, 3) and abs(int(rgb[0, 0, 0]) - expected) <= 1, (mode, rgb[0, 0])


def test_an_unreadable_image_is_named(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), "red").save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(OSError, match=f"image {path} cannot be read"):
        load_image(path, 32)


def test_a_folder_where_every_image_fails_is_an_error(tmp_path, capsys):
    from enat_lightning.cli import main

    root = _folder(tmp_path / "imgs")
    for p in root.rglob("*.png"):
        p.write_bytes(b"not an image")
    assert main(["tokenize", "imagefolder", "--root", str(root), "--out", str(tmp_path / "s"),
                            "--options.tokenizer", "demo", "--options.resolution", "32", "--options.progress", "false"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("enat: error: no image could be read (2 of 2 failed")
    assert err[0].startswith(f"enat tokenize: skipping: image {root / 'cat' / 'a.png'} cannot be read")
    assert not (tmp_path / "s" / "manifest.json").exists()
