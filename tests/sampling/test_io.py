"""Sample file writers: uint8 conversion, grid layout, atomic PNG / npz."""
import numpy as np
import pytest
import torch
from PIL import Image

from enat_lightning.sampling import io as sio


def test_to_uint8_clamps_rounds_and_moves_channels_last():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.7, 0.002]).reshape(1, 3, 1, 2)
    out = sio.to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 2, 3)
    assert out[0, 0, :, :].T.tolist() == [[0, 0], [128, 255], [255, 1]]
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        sio.to_uint8(torch.zeros(2, 1, 4, 4))


def test_grid_places_images_row_major():
    imgs = np.stack([np.full((2, 3, 3), i * 40, np.uint8) for i in range(5)])
    grid = sio.make_grid(imgs, nrow=3, pad=1)
    assert grid.shape == (1 + 2 * 3, 1 + 3 * 4, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 40 and grid[4, 1, 0] == 120 and grid[4, 5, 0] == 160
    assert grid[4, 9, 0] == 0  # the sixth cell stays empty
    assert sio.make_grid(imgs).shape[1] == 2 + 3 * (3 + 2)  # default ~sqrt(N) per row


def test_png_and_npz_round_trip_without_tmp_files(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    sio.save_png(tmp_path / "a.png", img)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
    sio.save_npz(tmp_path / "s.npz", arr_0=img[None], labels=np.array([3]))
    with np.load(tmp_path / "s.npz") as z:
        assert np.array_equal(z["arr_0"][0], img) and z["labels"].tolist() == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "s.npz"]
    with pytest.raises(ValueError, match="uint8"):
        sio.save_png(tmp_path / "b.png", img.astype(np.float32))


def test_streamed_npz_equals_savez(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
    lab = np.arange(7, dtype=np.int64)
    sio.save_npz_streamed(tmp_path / "s.npz", {"arr_0": (a.shape, np.uint8, [a[:3], a[3:]]),
                                               "labels": ((7,), np.int64, [lab[:5], lab[5:]])})
    with np.load(tmp_path / "s.npz") as z:
        assert z.files == ["arr_0", "labels"]
        assert np.array_equal(z["arr_0"], a) and np.array_equal(z["labels"], lab)
    with pytest.raises(ValueError, match="got 3 rows, expected 7"):
        sio.save_npz_streamed(tmp_path / "t.npz", {"labels": ((7,), np.int64, [lab[:3]])})
    assert not (tmp_path / "t.npz").exists() and not (tmp_path / "t.npz.tmp").exists()
