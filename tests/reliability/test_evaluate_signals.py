"""Issue 25 item 4 (evaluate side): SIGTERM to `enat evaluate` stops it after the current chunk with one line and exit
code 143, writing nothing and leaving no lock behind (a real signal to a real process)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from commands_helpers import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_stops_evaluate_after_the_current_chunk(tmp_path):
    from enat_lightning.demo.classifier import build_demo_classifier
    from enat_lightning.demo.data import ensure_demo_data

    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    cls = build_demo_classifier(tmp_path / "cls.pt", dataset="digits")
    tok = ensure_demo_data(dataset="digits").tokenizer
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "enat_lightning.cli", "evaluate", "--ckpt", str(ckpt),
                             "--tokenizer", f"demo:{tok}", "--feature", f"demo:{cls}", "--num_samples", "1000000",
                             "--batch_size", "4", "--sampler.steps", "2", "--is_splits", "1", "--out", str(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = out.parent / f".{out.name}.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the lock is taken inside the SIGTERM-recording block: from here a SIGTERM is a request
    assert lock.exists(), proc.communicate()
    time.sleep(1.0)  # into the sampling loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("enat: error: enat evaluate: stopped by SIGTERM after "), err
    assert "of 1000000 samples generated; no output written" in lines[0] and "enat sample" in lines[0]
    assert not out.exists() and not lock.exists()
