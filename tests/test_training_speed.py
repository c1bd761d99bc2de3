"""GPU-throughput readiness of ENATModule, checked on the CPU: Lightning's throughput / lr / grad-norm
logging with MFU, the finiteness check without a per-step host sync, fused / foreach AdamW, and the
opt-in torch.compile of the network."""
import copy

import lightning.pytorch as pl
import pytest
import torch

from enat_lightning.callbacks.throughput import TrainingThroughput, training_flops_per_sample
from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.evaluation.flops import build_meta
from enat_lightning.models import ENATConfig, NATConfig
from enat_lightning.module import ENATModule, NonFiniteLossError, adamw_implementation

TINY = dict(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def data(**kw):
    return SyntheticTokenDataModule(**{"num_classes": 4, "codebook_size": 32, "grid": 4, "num_train": 64,
                                       "num_val": 0, "batch_size": 16, **kw})


def fit(tmp_path, module, **kw):
    tr = pl.Trainer(**{"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                       "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
                       "default_root_dir": tmp_path, **kw})
    tr.fit(module, data())
    return tr


def test_mfu_is_logged_with_a_peak_and_flops_are_counted_on_meta(tmp_path):
    cfg = ENATConfig(**TINY)
    m = ENATModule(cfg, lr=1e-3, warmup_steps=0, reuse_prob=0.5)
    tr = fit(tmp_path, m, max_steps=6, log_every_n_steps=2, callbacks=[TrainingThroughput(peak_flops=1e12)])
    assert [type(c) for c in tr.callbacks].count(TrainingThroughput) == 1  # the module did not add a second one
    mfu = tr.callback_metrics["mfu"].item()
    assert 0 < mfu < 1
    assert tr.callback_metrics["tflops/s"].item() == pytest.approx(mfu * 1e12 / 1e12, rel=1e-6)
    tt = next(c for c in tr.callbacks if isinstance(c, TrainingThroughput))
    assert tt.flops_per_sample == training_flops_per_sample(cfg, reuse_prob=0.5)  # counted by the callback, once
    assert not hasattr(m, "flops_per_batch") and not hasattr(m, "flops_per_sample")  # no module<->callback coupling
    # fwd + bwd is ~3x the forward; a reuse step adds the teacher's forward and the reuse path
    from lightning.fabric.utilities.throughput import measure_flops

    from enat_lightning.masking import apply_mask, sample_mask

    net = build_meta(cfg)
    tokens = torch.zeros(1, cfg.seq_len, dtype=torch.long)
    ids = apply_mask(tokens, sample_mask(tokens, 0.8, torch.Generator().manual_seed(0)), cfg.mask_id)
    fwd = measure_flops(net, lambda: net(ids, torch.zeros(1, dtype=torch.long), logits_at="masked"))
    plain = training_flops_per_sample(cfg, reuse_prob=0.0)
    assert plain == pytest.approx(3 * fwd, rel=0.05)
    # a reuse step: the reuse path (fwd + bwd) and the teacher's features-only forward (no decoder,
    # no head); the mix is linear in reuse_prob
    reuse = training_flops_per_sample(cfg, reuse_prob=1.0)
    assert reuse > 0 and reuse != plain > 0
    assert training_flops_per_sample(cfg, reuse_prob=0.5) == pytest.approx((plain + reuse) / 2)
    nat = NATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, depth=2)
    cut = NATConfig(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, depth=2,
                    attention_removal="mask_to_visible")  # Fig. 2: masked dense attention, same MACs
    assert training_flops_per_sample(cut, reuse_prob=0.0) == training_flops_per_sample(nat, reuse_prob=0.0) > 0


def test_no_mfu_on_cpu_without_a_peak(tmp_path):
    tr = fit(tmp_path, ENATModule(ENATConfig(**TINY), warmup_steps=0), max_steps=4, log_every_n_steps=1)
    assert "samples/s" in tr.callback_metrics and "tokens/s" in tr.callback_metrics
    assert "mfu" not in tr.callback_metrics  # Lightning has no CPU peak: not logged, said once at fit start


def test_finiteness_is_read_on_the_host_only_every_n_steps(monkeypatch):
    m = ENATModule(ENATConfig(**TINY), warmup_steps=0, finite_check_every_n_steps=4)
    m.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    m.log = lambda *a, **k: None
    checks = []
    monkeypatch.setattr(m, "_stop_if_not_finite", lambda where: checks.append(where))
    batch = {"tokens": torch.randint(32, (4, 16)), "label": torch.randint(4, (4,))}
    for step in range(6):
        m.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed = step
        m.trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed = step
        m.training_step(batch, step)
    assert m.global_step == 5 and checks == ["before backward", "before backward"]  # steps 0 and 4

    # noting a loss never reads a tensor on the host
    def no_sync(*a, **k):
        raise AssertionError("host read of a tensor")

    for name in ("__bool__", "item", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    m._note_if_not_finite(torch.tensor(float("nan")))
    m._note_if_not_finite(torch.tensor(2.0))
    monkeypatch.undo()
    assert m._bad_loss[0].item() == 5 and torch.isnan(m._bad_loss[1])  # the first bad one is kept


def test_with_a_check_every_step_the_bad_update_is_never_applied(tmp_path):
    class PoisonAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.net.head.bias.fill_(float("nan"))
                self.weights = copy.deepcopy(pl_module.net.embed.state_dict())

    poison = PoisonAt()
    m = ENATModule(ENATConfig(**TINY), warmup_steps=0, finite_check_every_n_steps=1)
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at step 3 \(stopped before backward at step 3\)"):
        fit(tmp_path, m, max_steps=10, callbacks=[poison])
    for k, v in m.net.embed.state_dict().items():  # no optimizer step after the poison
        assert torch.equal(v, poison.weights[k]), k


def test_adamw_is_fused_on_cuda_and_cpu():
    # fused on CPU too: 3.4x the per-tensor loop on ENAT-S, and foreach was slower (docs/performance.md)
    assert adamw_implementation(torch.device("cuda", 0)) == {"fused": True}
    assert adamw_implementation(torch.device("cpu")) == {"fused": True}
    assert adamw_implementation(torch.device("mps")) == {"foreach": True}
    m = ENATModule(ENATConfig(**TINY))
    opt = m.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is True


def test_compile_flag_keeps_parameter_names():
    eager = ENATModule(ENATConfig(**TINY))
    compiled = ENATModule(ENATConfig(**TINY), compile=True)
    assert compiled.net._compiled_call_impl is not None and eager.net._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints load either way
    with pytest.raises(ValueError, match="finite_check_every_n_steps"):
        ENATModule(ENATConfig(**TINY), finite_check_every_n_steps=0)


@pytest.mark.slow
def test_compiled_network_matches_eager_outputs_and_training_loss(tmp_path):
    """torch.compile (inductor, C++ on the CPU): ~2 min of compiling on a busy 2-core machine."""
    cfg = ENATConfig(**TINY, embed_dropout=0.0)
    losses = {}
    for flag in (False, True):
        pl.seed_everything(0, verbose=False)
        m = ENATModule(cfg, lr=1e-3, warmup_steps=0, reuse_prob=0.0, compile=flag)
        tr = fit(tmp_path / str(flag), m, max_steps=3, log_every_n_steps=1)
        losses[flag] = (tr.callback_metrics["train/loss"].item(), m.net.state_dict())
        if flag:
            ids = torch.randint(32, (4, 16))
            ids[:, :8] = cfg.mask_id
            lab = torch.randint(4, (4,))
            eager = copy.deepcopy(m.net)
            eager._compiled_call_impl = None
            torch.testing.assert_close(m.net(ids, lab).logits, eager(ids, lab).logits, atol=1e-5, rtol=1e-5)
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    for k, v in losses[False][1].items():
        torch.testing.assert_close(losses[True][1][k], v, atol=1e-5, rtol=1e-4)
