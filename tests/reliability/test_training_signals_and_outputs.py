"""Training-side rules of issue 25: SIGTERM saves last.ckpt and exits non-zero (item 4); validate / test never
write into the training run's files (item 2) and refuse to score untrained weights (item 7)."""
from __future__ import annotations

import hashlib

from training_helpers import fit_here, step_of, tiny_config


def _signal_at(step: int, signum: str) -> str:
    return f"--trainer.callbacks+={{class_path: training_helpers.SignalAt, init_args: {{step: {step}, signum: {signum}}}}}"


def test_sigterm_saves_last_and_exits_non_zero(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=50, every_n=1000)
    rc, err = fit_here("-c", cfg, _signal_at(3, "SIGTERM"))
    assert rc == 143, err[-3000:]
    assert step_of(tmp_path / "run" / "checkpoints" / "last.ckpt") == 4
    assert "terminated (SIGTERM) at step 4; last.ckpt saved. Continue with --ckpt_path last" in err


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_validate_and_test_never_rewrite_the_runs_files(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, every_n=2)
    assert fit_here("-c", cfg)[0] == 0
    run = tmp_path / "run"
    before = _snapshot(run)
    assert "config.yaml" in {p.name for p in before}
    from enat_lightning import cli

    for sub in ("validate", "test"):
        rc = cli.main([sub, "-c", cfg, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                       "--trainer.max_steps", "2000", "--model.lr", "0.5", "--trainer.limit_val_batches", "1",
                       "--trainer.limit_test_batches", "1"])
        assert rc == 0, sub
        after = _snapshot(run)
        assert {k: v for k, v in after.items() if k in before} == before, sub
        assert "max_steps: 2000" not in (run / "config.yaml").read_text()


def test_validate_and_test_without_a_checkpoint_are_refused(tmp_path):
    from enat_lightning import cli
    import contextlib
    import io

    cfg = tiny_config(tmp_path, max_steps=2, every_n=2)
    for argv in (["validate", "-c", cfg], ["test", "-c", cfg], ["validate", "-c", cfg, "--ckpt_path", "last"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli.main(argv)
        assert rc == 2 and "untrained" in err.getvalue(), (argv, err.getvalue()[-2000:])


def test_sigterm_stops_sampling_after_the_current_chunk_and_the_rerun_resumes(tmp_path):
    import os
    import signal

    import pytest

    from commands_helpers import tiny_checkpoint
    from enat_lightning.errors import Terminated
    from enat_lightning.prediction import sample_to_dir
    from enat_lightning.sampling.checkpoint import load_generator
    from enat_lightning.sampling.runner import SampleRun
    from enat_lightning.sampling.settings import SamplerSettings

    model, _ = load_generator(tiny_checkpoint(tmp_path / "m.ckpt"))
    out, labels, settings = tmp_path / "s", [1, 2, 3, 4, 5, 6], SamplerSettings(steps=2)

    def term(c):
        if c == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Terminated, match="stopped by SIGTERM after chunk 0"):
        sample_to_dir(model, labels, out, settings, run=SampleRun(0, 2), device="cpu", progress=False, on_chunk=term)
    assert sorted(p.name for p in (out / "chunks").glob("chunk_*.npz")) == ["chunk_000000.npz"]
    r = sample_to_dir(model, labels, out, settings, run=SampleRun(0, 2), device="cpu", progress=False)
    assert r["resumed"] == 1 and r["num_samples"] == 6
