"""Sharded training on the CPU: FSDP2 (enat_lightning.sharding.FSDP2Strategy = Lightning's
ModelParallelStrategy over one data-parallel mesh), 2 gloo processes.

One launch of tests/distributed/_fsdp_train.py covers: the sharded run equals the unsharded run on
the same global batch (fp32 tolerance, online and EMA weights), a sharded checkpoint (a folder)
resumes to the same weights, and `python -m lightning.fabric.utilities.consolidate_checkpoint` turns it
into one file that `enat sample`'s loader reads and samples from. (The lightning.pytorch variant of
that tool only reads FSDPStrategy checkpoints -- it looks for a "model" key -- and fails on
ModelParallelStrategy's "state_dict" layout; the fabric tool writes the checkpoint as saved.)
"""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from enat_testing import REPO

SCRIPT = REPO / "tests" / "distributed" / "_fsdp_train.py"
EMA = "ema.module."  # the EMA network's weights inside its AveragedModel


pytestmark = pytest.mark.slow  # 3 fits on 2 processes + 1: ~20 s of CPU, 60-80 s wall on a busy 2-core machine


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "2"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("_fsdp_train", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(str(out), 1)  # the unsharded reference, in this process
    return out, env


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_sharded_run_equals_unsharded_run(runs):
    out, _ = runs
    ref, sharded = _weights(out / "reference.pt"), _weights(out / "A.pt")
    assert sorted(ref) == sorted(sharded) and any(k.startswith("ema.") for k in ref)
    for k, v in ref.items():
        torch.testing.assert_close(sharded[k].to(v.dtype), v, atol=2e-5, rtol=1e-4, msg=k)
    assert not torch.equal(sharded["net.head.bias"], sharded[EMA + "head.bias"])  # the EMA lags: compared too


def test_sharded_checkpoint_resumes_to_the_same_weights(runs):
    out, _ = runs
    ckpt = out / "ckpt" / "epoch=0-step=2.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # one shard file per rank
    straight, resumed = _weights(out / "A.pt"), _weights(out / "B.pt")
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, atol=1e-6, rtol=0, msg=k)


def test_consolidated_checkpoint_loads_and_samples(runs):
    out, env = runs
    from enat_lightning.sampling import generate
    from enat_lightning.sampling.checkpoint import load_generator
    from enat_lightning.seeding import sample_generators

    ckpt = out / "ckpt" / "epoch=1-step=4.ckpt"
    proc = subprocess.run([sys.executable, "-m", "lightning.fabric.utilities.consolidate_checkpoint", str(ckpt)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    net, cfg = load_generator(f"{ckpt}.consolidated")  # the EMA weights, as `enat sample --ckpt` reads them
    final = _weights(out / "A.pt")
    for k, v in net.state_dict().items():
        assert torch.equal(v, final[EMA + k]), k
    ids = generate(net, torch.tensor([0, 1, 2, 4]), steps=4, cfg_scale=2.0, generator=sample_generators(0, range(4)))
    assert ids.shape == (4, cfg.grid, cfg.grid) and int(ids.max()) < cfg.codebook_size
