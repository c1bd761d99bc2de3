"""`enat tokenize coco`: the CLI over data/coco.py (hash test-double encoder, precomputed .npy, errors)."""
import numpy as np
from t2i_helpers import make_coco, read_all, tokenizer

from enat_lightning.cli import main


def test_tokenize_coco_cli(tmp_path, capsys):
    images, caps, anns = make_coco(tmp_path)
    tok = tokenizer().save(tmp_path / "tok.npz")
    base = ["tokenize", "coco", "--images", str(images), "--captions", str(caps), "--tokenizer", f"demo:{tok}",
            "--resolution", "16", "--no-progress"]
    assert main(base + ["--text-encoder", "hash:dim=12,length=6", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "4 samples" in out and "8 captions of 6x12 (hash)" in out
    m, samples = read_all(tmp_path / "a")
    assert m.text["dim"] == 12 and len(samples) == 4

    np.save(tmp_path / "emb.npy", np.ones((len(anns), 6, 12), np.float16))
    assert main(base + ["--embeddings", str(tmp_path / "emb.npy"), "--out", str(tmp_path / "b"), "--limit", "2"]) == 0
    assert "2 samples" in capsys.readouterr().out

    assert main(base + ["--out", str(tmp_path / "c")]) == 2
    assert "exactly one caption source" in capsys.readouterr().err
    assert main(base + ["--text-encoder", f"clip:{tmp_path / 'no-clip'}", "--out", str(tmp_path / "d")]) == 2
    assert "no-clip" in capsys.readouterr().err
