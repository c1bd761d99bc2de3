"""Reliability from the outside (issue: end to end for a new user): bad inputs give one clear
message naming the culprit without a traceback wall, and a SIGKILLed training run resumes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from enat_lightning.demo.data import ensure_demo_data

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "experiments" / "demo.yaml")


def enat(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enat_lightning.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_clear_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert errors, res.stderr[-3000:]
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in:\n{res.stderr[-3000:]}"


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory) -> Path:
    paths = ensure_demo_data()
    out = tmp_path_factory.mktemp("shards")
    shutil.copytree(paths.train, out / "train")
    shutil.copytree(paths.val, out / "val")
    return out


def quick_fit(*extra: str, root: Path) -> subprocess.CompletedProcess:
    return enat("fit", "-c", DEMO, f"--trainer.default_root_dir={root}", "--trainer.max_steps=3", "--trainer.val_check_interval=null",
                "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", *extra)


def test_truncated_shard_names_the_shard(demo_shards, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(demo_shards / "train", train)
    shards = sorted(train.glob("*.tar"))
    for shard in shards:  # every shard: whichever the shuffled reader opens first is truncated
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    res = quick_fit(f"--data.init_args.train_shards={train}", "--data.init_args.val_shards=null", root=tmp_path)
    named = [s.name for s in shards if s.name in res.stderr]
    assert named, res.stderr[-3000:]
    assert_one_clear_error(res, named[0])


def test_shard_from_another_tokenizer_is_refused(demo_shards, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(demo_shards / "train", train)
    manifest = json.loads((train / "manifest.json").read_text())
    manifest["tokenizer"]["weights_sha256"] = "f" * 64
    (train / "manifest.json").write_text(json.dumps(manifest))
    res = quick_fit(f"--data.init_args.train_shards={train}", "--data.init_args.val_shards=null", root=tmp_path)
    assert_one_clear_error(res, str(train / "manifest.json"), "tokenizer")


def test_config_typo_names_the_key(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  learning_rate: 0.001\n")
    res = enat("fit", "-c", DEMO, "-c", str(typo))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "learning_rate" in res.stderr


def test_missing_inception_weights_names_the_file(tmp_path):
    samples = tmp_path / "samples.npz"
    import numpy as np

    np.savez(samples, arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    res = enat("evaluate", "--samples", str(samples), "--inception", str(missing), "--out", str(tmp_path / "r.json"))
    assert_one_clear_error(res, str(missing))


def test_sigkill_during_training_then_resume(tmp_path):
    """Kill -9 the demo training right after its first checkpoint; `--ckpt_path last` resumes, and no
    checkpoint file is ever half-written (AtomicCheckpointIO: temp file beside the target + fsync + rename)."""
    ensure_demo_data()
    common = ["fit", "-c", DEMO, "--trainer.max_steps=120", "--trainer.val_check_interval=null",
              f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=run",
              "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
              "init_args: {save_last: true, every_n_train_steps: 20}}]"]
    ckpt_dir = tmp_path / "run" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "enat_lightning.cli", *common], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (ckpt_dir / "last.ckpt").exists():
            assert proc.poll() is None, "training ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        time.sleep(0.7)  # land somewhere in the middle of the following steps
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for f in ckpt_dir.iterdir():  # every file left behind is a complete checkpoint
        if f.suffix == ".ckpt":
            torch.load(f, map_location="cpu", weights_only=False)
    killed_at = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < 120

    res = enat(*common, "--ckpt_path", "last")
    assert res.returncode == 0, res.stderr[-3000:]
    final = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == 120
    assert any(k.startswith("ema.module.") for k in final["state_dict"])
    assert not [f for f in os.listdir(ckpt_dir) if f.endswith((".tmp", ".part"))]
