import dataclasses
import hashlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.models import ENATConfig, NATConfig
from enat_lightning.module import ENATModule, NonFiniteLossError, net_config_dict, update_ema, warmup_factor

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TINY = dict(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)


def tiny_module(**kw) -> ENATModule:
    net = kw.pop("net", ENATConfig(**TINY))
    return ENATModule(net, **{"lr": 3e-3, "warmup_steps": 0, "ema_decay": 0.9, **kw})


def data(**kw) -> SyntheticTokenDataModule:
    return SyntheticTokenDataModule(**{"num_classes": 4, "codebook_size": 32, "grid": 4, "num_train": 64,
                                       "num_val": 16, "batch_size": 16, **kw})


def trainer(tmp_path=None, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=tmp_path)
    return pl.Trainer(**{**args, **kw})


def attach(module: ENATModule) -> ENATModule:
    """Gives a module a (not fitting) trainer so training_step can run outside fit."""
    module.trainer = trainer()
    module.log = lambda *args, **kwargs: None  # no fit loop collects the logs here
    return module


def batch_of(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"tokens": torch.randint(32, (n, 16), generator=g), "label": torch.randint(4, (n,), generator=g)}


def test_ema_is_averaged_model_and_equals_the_hand_written_update():
    """AveragedModel + get_ema_multi_avg_fn == the former hand-written rule: the EMA starts at the
    initial weights and every step does ema <- d * ema + (1 - d) * online; buffers are copied."""
    m = tiny_module(ema_decay=0.9)
    assert isinstance(m.ema, torch.optim.swa_utils.AveragedModel) and m.ema_net is m.ema.module
    m.net.register_buffer("probe", torch.zeros(3))  # a buffer: copied from the online network, not averaged
    m.ema.module.register_buffer("probe", torch.ones(3))
    reference = [p.detach().clone() for p in m.net.parameters()]  # hand-written EMA, same start
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        with torch.no_grad():
            for p in m.net.parameters():
                p.add_(torch.randn(p.shape, generator=g))
            m.net.probe.fill_(step + 5)
        update_ema(m.ema, m.net)
        reference = [0.9 * r + 0.1 * p.detach() for r, p in zip(reference, m.net.parameters())]
    for r, e in zip(reference, m.ema_net.parameters()):
        torch.testing.assert_close(e, r, atol=1e-6, rtol=0)
    assert torch.equal(m.ema_net.probe, torch.full((3,), 7.0))
    assert int(m.ema.n_averaged) == 4  # initial weights + 3 updates


def test_old_checkpoint_layout_still_loads(tmp_path):
    """Checkpoints written before AveragedModel (EMA under ``ema.``, net as cfg.to_dict()) resume."""
    m = tiny_module()
    with torch.no_grad():
        for p in m.ema_net.parameters():
            p.add_(1.0)
    sd = {k: v for k, v in m.state_dict().items() if k != "ema.n_averaged"}
    sd = {("ema." + k[len("ema.module."):] if k.startswith("ema.module.") else k): v for k, v in sd.items()}
    old = {"state_dict": sd, "hyper_parameters": {**dict(m.hparams), "net": m.cfg.to_dict()},
           "global_step": 3, "epoch": 0, "pytorch-lightning_version": "2.4.0"}
    torch.save(old, tmp_path / "old.ckpt")
    loaded = ENATModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.cfg == m.cfg
    for a, b in zip(loaded.ema_net.parameters(), m.ema_net.parameters()):
        assert torch.equal(a, b)


def test_warmup_is_linear_then_constant():
    assert [warmup_factor(s, 4) for s in (0, 1, 4, 100)] == [0.0, 0.25, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_hparams_make_the_checkpoint_self_describing():
    m = tiny_module()
    assert m.hparams["net"] == {"class_path": "enat_lightning.models.ENATConfig",
                                "init_args": dataclasses.asdict(ENATConfig(**TINY))} == net_config_dict(m.cfg)
    again = ENATModule(**dict(m.hparams))  # what load_from_checkpoint does
    assert again.cfg == m.cfg
    keys = m.state_dict().keys()
    assert any(k.startswith("net.") for k in keys) and any(k.startswith("ema.module.") for k in keys)
    assert all(not p.requires_grad for p in m.ema.parameters())
    m.train()
    assert m.net.training and not m.ema.training  # the teacher never uses dropout


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="model.reuse_prob"):
        tiny_module(reuse_prob=1.5)
    with pytest.raises(ValueError, match="NAT baseline has no reuse"):
        tiny_module(net=NATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, depth=2))
    m = attach(tiny_module())
    with pytest.raises(ValueError, match="'tokens'"):
        m.training_step({"x": 1}, 0)
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        m.training_step({"tokens": torch.zeros(2, 9, dtype=torch.long), "label": torch.zeros(2)}, 0)


@pytest.mark.parametrize("reuse_tokens, teacher_decodes", [("visible", False), ("all", True)])
def test_reuse_teacher_skips_the_decoder_when_its_output_goes_unread(reuse_tokens, teacher_decodes):
    m = attach(tiny_module(reuse_prob=1.0, net=ENATConfig(**TINY, reuse_tokens=reuse_tokens))).train()
    calls = {"teacher": 0, "online": 0}
    m.ema.module.decoder[0].register_forward_hook(lambda *a: calls.update(teacher=calls["teacher"] + 1))
    m.net.decoder[0].register_forward_hook(lambda *a: calls.update(online=calls["online"] + 1))
    m.training_step(batch_of(), 0).backward()
    assert calls == {"teacher": int(teacher_decodes), "online": 1}


def test_reuse_step_teacher_gets_no_gradient_and_projection_does():
    m = attach(tiny_module(reuse_prob=1.0)).train()
    with torch.no_grad():  # adaLN-Zero starts every block as the identity, which blocks all context gradients
        for blk in [*m.net.encoder, *m.net.decoder]:
            blk.adaLN_modulation[-1].weight.normal_(0, 0.2)
    seen = {}
    m.ema.register_forward_hook(lambda mod, inp, out: seen.update(teacher=out, training=mod.training))
    loss = m.training_step(batch_of(), 0)
    loss.backward()
    assert "teacher" in seen and not seen["training"]
    assert not seen["teacher"].feat.requires_grad  # stop-gradient on z_prev
    assert all(p.grad is None for p in m.ema.parameters())
    proj_grad = sum(p.grad.abs().sum() for p in m.net.reuse_proj.parameters())
    assert proj_grad > 0


def test_step_without_reuse_gives_idle_params_zero_gradients():
    m = attach(tiny_module(reuse_prob=0.0)).train()
    seen = []
    m.ema.register_forward_hook(lambda *a: seen.append(1))
    m.training_step(batch_of(), 0).backward()
    assert not seen  # no teacher pass
    for p in m.net.reuse_proj.parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0  # present for DDP, but exactly zero
    assert all(p.grad is not None for p in m.net.parameters())


def test_same_step_same_draws():
    a = attach(tiny_module(reuse_prob=0.5, net=ENATConfig(**TINY, embed_dropout=0.5)))
    b = attach(tiny_module(reuse_prob=0.5, net=ENATConfig(**TINY, embed_dropout=0.5)))
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    assert torch.equal(a.training_step(batch_of(), 0), b.training_step(batch_of(), 0))


def test_logged_grad_norm_is_the_total_norm_of_the_raw_gradients():
    """grad_norm (logged on logging steps, before the optimizer step) equals the 2-norm of all
    gradients together, computed by hand."""
    m = tiny_module(reuse_prob=0.5)
    logged = {}

    class Probe(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            logged["expected"] = torch.cat([p.grad.reshape(-1) for p in pl_module.net.parameters()
                                            if p.grad is not None]).norm().item()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged["grad_norm"] = trainer.callback_metrics["grad_norm"].item()

    trainer(max_steps=1, log_every_n_steps=1, callbacks=[Probe()], limit_val_batches=0).fit(m, data())
    assert logged["grad_norm"] == pytest.approx(logged["expected"], rel=1e-5) and logged["expected"] > 0


def test_loss_falls_below_log_k_fast(tmp_path):
    torch.manual_seed(0)
    m = tiny_module(reuse_prob=0.5)
    tr = trainer(tmp_path, max_steps=150, limit_val_batches=1, val_check_interval=150, check_val_every_n_epoch=None,
                 logger=pl.loggers.CSVLogger(tmp_path, name="csv"))
    tr.fit(m, data(num_train=256, batch_size=32))
    loss = tr.callback_metrics["train/loss"].item()
    assert loss < math.log(32) - 1.0, loss  # log K = 3.47
    assert tr.callback_metrics["val/loss"].item() < math.log(32) - 1.0
    for key in ("train/acc", "grad_norm", "samples/s", "tokens/s", "val/acc", "val/ema_loss"):
        assert key in tr.callback_metrics, key
    logged = (Path(tr.logger.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"lr", "grad_norm", "samples/s", "tokens/s", "tflops/s"} <= set(logged)  # lr: LearningRateMonitor


@pytest.mark.slow
def test_loss_falls_clearly_in_a_few_hundred_steps(tmp_path):
    torch.manual_seed(0)
    m = tiny_module(reuse_prob=0.5, net=ENATConfig(**{**TINY, "codebook_size": 64, "num_classes": 10}))
    tr = trainer(tmp_path, max_steps=400, limit_val_batches=0)
    tr.fit(m, data(num_train=1024, batch_size=32, codebook_size=64, num_classes=10))
    assert tr.callback_metrics["train/loss"].item() < math.log(64) - 1.5  # 4.16 -> ~2.4 in 400 steps


def test_resume_equals_straight_run(tmp_path):
    # Split at an epoch end (max_epochs): Lightning restarts a non-resumable loader at the next epoch.
    def run(root, max_epochs, ckpt=None):
        pl.seed_everything(0, verbose=False)
        m = tiny_module(reuse_prob=0.5)  # embed_dropout 0.1: dropout is seeded from the step, too
        cb = pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_epochs=1, save_top_k=-1)
        tr = trainer(root, max_epochs=max_epochs, limit_val_batches=0, enable_checkpointing=True, callbacks=[cb])
        tr.fit(m, data(), ckpt_path=ckpt)
        return m

    straight = run(tmp_path / "a", 2)  # 4 batches per epoch: N = 8 steps
    run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", 2, ckpt=str(tmp_path / "b" / "last.ckpt"))
    assert resumed.global_step == straight.global_step == 8
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6, rtol=0), k
    ema_delta = max((a - b).abs().max() for a, b in zip(straight.ema.parameters(), straight.net.parameters()))
    assert ema_delta > 1e-4  # the EMA really lags the online weights, so comparing it means something


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    class PoisonAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                self.sha = hashlib.sha256((tmp_path / "last.ckpt").read_bytes()).hexdigest()
                with torch.no_grad():
                    pl_module.net.head.bias.fill_(float("nan"))

    poison = PoisonAt()
    cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2, save_top_k=-1)
    tr = trainer(tmp_path, max_steps=20, limit_val_batches=0, enable_checkpointing=True, callbacks=[cb, poison])
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at step 5"):
        tr.fit(tiny_module(), data())
    assert hashlib.sha256((tmp_path / "last.ckpt").read_bytes()).hexdigest() == poison.sha
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_ddp_two_processes_equal_single_process(tmp_path):
    """2 CPU processes (gloo) on the global batch == 1 process: equal weights and EMA (~15-40 s)."""
    script = REPO / "tests" / "_ddp_train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "2", "16"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("_ddp_train", script)
    single_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(single_run)
    single_run.main(str(tmp_path), 1, 16)  # the reference: one process, same global batch, in this process
    r0, r1, single = (torch.load(tmp_path / f, weights_only=True)
                      for f in ("rank0_of2.pt", "rank1_of2.pt", "rank0_of1.pt"))
    assert r0["step"] == single["step"] == 6
    for k, v in single["state_dict"].items():
        assert torch.equal(r0["state_dict"][k], r1["state_dict"][k]), k
        assert torch.allclose(r0["state_dict"][k], v, atol=1e-5, rtol=0), k


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_equal_one_process_read_every_sample_once_and_share_the_reuse_coin(tmp_path):
    """A simulated 2-node job (2 x 1 process, gloo, MASTER_ADDR=127.0.0.1, NODE_RANK, 2 data workers each)
    equals one process on the same global batch; every sample is read exactly once per epoch across nodes,
    ranks and workers; every rank flips the same reuse coin at every step (docs/training.md)."""
    script = REPO / "tests" / "_ddp_train.py"
    port = str(_free_port())
    procs = []
    for node in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "NODE_RANK": str(node), "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), "2", "16", "2", "12", "2"],
                                      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    spec = importlib.util.spec_from_file_location("_ddp_train", script)
    single_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(single_run)
    single_run.main(str(tmp_path), 1, 16, 1, 12)
    r0, r1, single = (torch.load(tmp_path / f, weights_only=True)
                      for f in ("rank0_of2.pt", "rank1_of2.pt", "rank0_of1.pt"))
    assert r0["step"] == single["step"] == 12  # 2 epochs of 6 steps
    for k, v in single["state_dict"].items():
        assert torch.equal(r0["state_dict"][k], r1["state_dict"][k]), k
        assert torch.allclose(r0["state_dict"][k], v, atol=1e-5, rtol=0), k
    for epoch in (0, 1):
        read = [i for r in (r0, r1) for e, batch in r["read"] if e == epoch for i in batch]
        assert sorted(read) == list(range(96)), epoch  # each sample once per epoch, across both nodes
    # One reuse coin for all ranks (and the same as one process's): every rank runs the same graph.
    assert r0["reuse"] == r1["reuse"] == single["reuse"] and 0.0 in r0["reuse"] and 1.0 in r0["reuse"]
