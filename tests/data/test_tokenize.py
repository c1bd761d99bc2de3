import numpy as np
import pytest
import torch
from PIL import Image

from enat_lightning.cli import main
from enat_lightning.data.datamodule import TokenShardDataModule
from enat_lightning.demo.data import ensure_demo_data, load_digit_images
from enat_lightning.data.tokenize import adm_center_crop, list_imagefolder, load_image, tokenize_imagefolder, tokenize_list
from enat_lightning.tokenizers.demo import DemoTokenizer


@pytest.fixture(scope="module")
def tok() -> DemoTokenizer:
    return DemoTokenizer.load(ensure_demo_data(dataset="digits").tokenizer)


def _digit_folder(root, n_per_class=3, classes=(3, 7, 1)):
    """Real digits as 16x16 PNGs in ROOT/<name>/<i>.png; folder names sort differently from digits."""
    images, labels, _ = load_digit_images()
    names = {3: "c_three", 7: "a_seven", 1: "b_one"}
    for d in classes:
        (root / names[d]).mkdir(parents=True, exist_ok=True)
        for j, i in enumerate((labels == d).nonzero().flatten()[:n_per_class].tolist()):
            arr = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(root / names[d] / f"{j}.png")
    return root


def test_adm_center_crop_sizes():
    img = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    assert adm_center_crop(img, 32).size == (32, 32)
    assert adm_center_crop(Image.fromarray(np.zeros((10, 12, 3), np.uint8)), 16).size == (16, 16)


def test_imagefolder_round_trip_unreadable_and_resume(tmp_path, tok, capsys):
    root = _digit_folder(tmp_path / "imgs")
    (root / "b_one" / "9_broken.png").write_bytes(b"\x89PNG broken")
    items, classes = list_imagefolder(root)
    assert classes == ["a_seven", "b_one", "c_three"] and len(items) == 10

    class Stop(Exception):
        pass

    def stop_after_first(k):
        if k == 0:
            raise Stop

    out = tmp_path / "shards"
    with pytest.raises(Stop):  # interrupted after shard 0
        tokenize_imagefolder(root, tok, out, 16, shard_size=4, batch_size=3, progress=False, on_shard=stop_after_first)
    assert not (out / "manifest.json").exists() and (out / "shard-000000.tar").exists()
    written = []
    res = tokenize_imagefolder(root, tok, out, 16, shard_size=4, batch_size=3, progress=False, on_shard=written.append)
    assert res.resumed_from == 1 and written == [1, 2]  # shard 0 was not redone
    assert res.unreadable == [str(root / "b_one" / "9_broken.png")]
    assert "9_broken.png" in capsys.readouterr().err
    m = res.manifest
    assert m.sample_count == 9 and m.has_flip and m.num_classes == 3 and m.latent_side == 4
    assert m.source["classes"] == classes and m.tokenizer == tok.identity()

    dm = TokenShardDataModule(str(out), str(out), batch_size=4, num_workers=0, codebook_size=128, grid=4)
    dm.setup("fit")
    got = torch.cat([b["tokens"] for b in dm.val_dataloader()])
    labels = torch.cat([b["label"] for b in dm.val_dataloader()])
    good = [(p, y) for p, y in items if "broken" not in p]
    want = tok.encode(torch.stack([load_image(p, 16) for p, _ in good])).reshape(-1, 16)
    assert torch.equal(got, want) and labels.tolist() == [y for _, y in good]
    # the stored flip is the encoding of the mirrored image
    from enat_lightning.data.reader import iter_shard, resolve_manifest
    mm, urls, _ = resolve_manifest(str(out))
    s = next(iter_shard(urls[0], mm))[1]
    assert torch.equal(torch.from_numpy(s.flip.astype(np.int64)), tok.encode(load_image(good[0][0], 16)[None].flip(-1))[0])


def test_list_and_cli(tmp_path, tok):
    root = _digit_folder(tmp_path / "imgs", n_per_class=2)
    lst = tmp_path / "list.tsv"
    lst.write_text("".join(f"{p}\t{y + 2}\n" for p, y in list_imagefolder(root)[0]))
    res = tokenize_list(lst, tok, tmp_path / "l", 16, shard_size=100, progress=False, flip=False)
    assert res.manifest.sample_count == 6 and res.manifest.num_classes == 5 and not res.manifest.has_flip
    out = tmp_path / "cli"
    args = ["tokenize", "imagefolder", "--root", str(root), "--resolution", "16", "--tokenizer",
            f"demo:{ensure_demo_data(dataset='digits').tokenizer}", "--out", str(out), "--shard-size", "4", "--no-progress"]
    assert main(args) == 0 and (out / "manifest.json").exists()
    assert main(args) == 0  # finished output: nothing to do
    assert main(args[:-1] + ["--no-flip"]) == 2  # a different job into the same directory is refused
    bad = tmp_path / "bad.tsv"
    bad.write_text("x.png\tseven\n")
    assert main(["tokenize", "list", "--list", str(bad), "--tokenizer", "demo", "--out", str(tmp_path / "b"),
                 "--resolution", "16"]) == 2
