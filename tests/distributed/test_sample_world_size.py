"""Sampling does not depend on the number of processes: 1 and 2 gloo CPU processes through
Trainer.predict write byte-identical samples.npz (per-sample seeds, chunk c made by rank c mod W)."""
import importlib.util
import os
import subprocess
import sys

from enat_testing import REPO

SCRIPT = REPO / "tests" / "distributed" / "_sample_ddp.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("_sample_ddp", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_and_two_processes_write_byte_identical_samples(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "two"), "2"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = _load_script().main(str(tmp_path / "one"), 1)  # the reference, in this process
    assert one["world_size"] == 1 and one["resumed"] == 0 and one["num_samples"] == 11
    a, b = (tmp_path / "one" / "samples.npz").read_bytes(), (tmp_path / "two" / "samples.npz").read_bytes()
    assert a == b
    chunks = sorted(p.name for p in (tmp_path / "two" / "chunks").glob("chunk_*.npz"))
    assert chunks == [f"chunk_{c:06d}.npz" for c in range(4)]
    assert not list((tmp_path / "two").rglob("*.tmp"))
