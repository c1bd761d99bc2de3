"""Issue 13.9: every missing-asset error names the command that makes the asset; issue 13.4: a missing optional
extra names the pip extra (lightning-utilities' RequirementCache)."""
from __future__ import annotations

import pytest
from commands_helpers import one_line_error, tiny_checkpoint



def test_missing_token_shards_name_enat_tokenize_demo(tmp_path):
    """`enat fit -c experiments/demo.yaml` on a fresh clone (no data/demo/shards yet), as a user runs it."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    missing = tmp_path / "data" / "demo" / "shards"
    res = subprocess.run([sys.executable, "-m", "enat_lightning.cli", "fit", "-c", "experiments/demo.yaml",
                          f"--data.init_args.train_shards={missing}/train", f"--data.init_args.val_shards={missing}/val",
                          "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
                          f"--trainer.logger.init_args.save_dir={tmp_path}"],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("enat: error:")]
    assert len(errors) == 1 and "no manifest.json at" in errors[0]
    assert "`enat tokenize demo` (or `make demo`)" in errors[0]


def test_missing_demo_tokenizer_names_enat_tokenize_demo(tmp_path, capsys):
    one_line_error(capsys, ["tokenize", "imagefolder", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--tokenizer", f"demo:{tmp_path / 'tokenizer.npz'}"], "tokenizer.npz", "enat tokenize demo")


def test_missing_fid_stats_name_enat_fid_stats(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "s.npz", arr_0=np.zeros((2, 16, 16, 3), np.uint8))
    one_line_error(capsys, ["evaluate", "--samples", str(tmp_path / "s.npz"), "--feature", "demo", "--ref",
                            str(tmp_path / "ref.npz")], "ref.npz", "enat fid-stats")


def test_missing_checkpoint_names_enat_fit_and_import_official(tmp_path, capsys):
    for argv in (["flops", "--ckpt", str(tmp_path / "x.ckpt")],
                 ["sample", "--ckpt", str(tmp_path / "x.ckpt"), "--labels", "1", "--out", str(tmp_path / "o")],
                 ["analyze", "attention", "--ckpt", str(tmp_path / "x.ckpt"), "--out", str(tmp_path / "o")]):
        one_line_error(capsys, argv, "x.ckpt does not exist", "enat fit", "enat import-official")


def test_missing_samples_and_training_config_name_their_makers(tmp_path, capsys):
    one_line_error(capsys, ["evaluate", "--samples", str(tmp_path / "s.npz"), "--feature", "demo"], "enat sample")
    one_line_error(capsys, ["flops", "--experiment", str(tmp_path / "none.yaml")], "none.yaml does not exist",
                   "experiments/")


def test_missing_extra_names_it(monkeypatch, capsys):
    from enat_lightning.commands import common
    from enat_lightning.errors import UserError

    monkeypatch.setitem(common.EXTRAS, "enat-surely-not-installed>=1", ("t2i", "the CLIP text encoder"))
    with pytest.raises(UserError, match=r"pip install 'enat-lightning\[t2i\]'"):
        common.require_extra("enat-surely-not-installed>=1")
    common.require_extra("torch-fidelity>=0.3")  # installed in the test environment: no error


def test_checkpoint_error_never_advises_unsafe_loading(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "c.ckpt")
    (tmp_path / "c.ckpt.sha256").unlink()  # a file from elsewhere: no checksum recorded
    ck.write_bytes(b"\x80\x02}q\x00" + b"\x00" * 64)  # a pickle header, then garbage
    line = one_line_error(capsys, ["flops", "--ckpt", str(ck)], str(ck))
    assert "weights_only" not in line
