"""No host-device synchronisation on the training hot path (issue 17, GPU throughput).

On a GPU every read-back of a device value (``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``,
boolean-mask indexing, ``nonzero``) stalls the launch queue. On CPU nothing stalls, so these tests
count the calls that *would* sync: the Python conversions are patched, and a dispatch mode records
the aten ops that read a value back (``_local_scalar_dense`` is what every scalar conversion runs;
``nonzero`` / ``masked_select`` / boolean ``index`` size their output from the data).
"""
from __future__ import annotations

import contextlib

import lightning.pytorch as pl
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from enat_lightning.masking import masked_ce
from enat_lightning.models import ENAT, ENATConfig, NAT, NATConfig
from enat_lightning.module import ENATModule
from enat_testing import perturbed

TINY = dict(codebook_size=32, num_classes=5, grid=4, width=32, heads=4)
aten = torch.ops.aten
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
            aten.is_nonzero.default, aten.equal.default}


class SyncRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            self.syncs.append(str(func))
        elif func is aten.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.syncs.append("boolean-mask index")
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_syncs():
    """Records would-be syncs: patched Tensor conversions plus the dispatch-level read-backs."""
    rec = SyncRecorder()
    originals = {}

    def patch(name):
        orig = getattr(torch.Tensor, name)
        originals[name] = orig

        def wrapped(self, *a, **k):
            rec.syncs.append(f"Tensor.{name}")
            return orig(self, *a, **k)
        setattr(torch.Tensor, name, wrapped)

    for name in ("item", "__int__", "__bool__", "__float__", "__index__", "tolist"):
        patch(name)
    try:
        with rec:
            yield rec.syncs
    finally:
        for name, orig in originals.items():
            setattr(torch.Tensor, name, orig)


def test_the_recorder_sees_each_kind_of_sync():
    t = torch.tensor([1, 2, 3])
    for read_back in (lambda: t.sum().item(), lambda: int(t.max()), lambda: bool((t > 0).all()),
                      lambda: t.tolist(), lambda: t[t > 1], lambda: t.nonzero()):
        with count_syncs() as syncs:
            read_back()
        assert syncs, "the recorder missed a read-back"
    with count_syncs() as syncs:
        (t * 2).argsort()
    assert not syncs



class _Probe:
    """Wraps a network's forward: counts syncs inside every call, remembers the calls."""

    def __init__(self, net):
        self.calls: list[tuple[dict, list[str]]] = []
        self._forward = net.forward
        net.forward = self

    def __call__(self, *args, **kwargs):
        with count_syncs() as syncs:
            out = self._forward(*args, **kwargs)
        self.calls.append((kwargs, syncs))
        return out


@pytest.mark.parametrize("reuse_prob", [0.0, 1.0])
def test_training_step_forwards_do_not_sync(reuse_prob):
    module = ENATModule(ENATConfig(**TINY, enc_depth=2, dec_depth=1), reuse_prob=reuse_prob, warmup_steps=0)
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    module.log = lambda *a, **k: None
    perturbed(module.net).train()
    ema_net = getattr(module.ema, "module", module.ema)  # the network inside the EMA wrapper
    ema_net.load_state_dict(module.net.state_dict())
    online, teacher = _Probe(module.net), _Probe(ema_net)
    g = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(0, 32, (4, 16), generator=g), "label": torch.randint(0, 5, (4,), generator=g)}
    for step in range(3):  # different masks and reuse draws
        module.training_step(batch, step)
    assert len(online.calls) == 3 and len(teacher.calls) == (3 if reuse_prob else 0)
    for kwargs, syncs in online.calls + teacher.calls:
        assert "num_masked" in kwargs  # the step tells the network its counts...
        assert syncs == []  # ...so nothing is read back


def test_loss_with_known_count_does_not_sync_and_equals_the_boolean_form():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 32, (4, 16), generator=g)
    masking = torch.zeros(4, 16, dtype=torch.bool)
    for b in range(4):
        masking[b, torch.randperm(16, generator=g)[:9]] = True
    logits = torch.randn(4, 9, 32, generator=g)
    with count_syncs() as syncs:
        fast = masked_ce(logits, tokens, masking, 0.1, num_masked=9)
    assert syncs == []
    assert torch.equal(fast, masked_ce(logits, tokens, masking, 0.1))


def test_sampling_pattern_forward_with_counts_does_not_sync():
    """The calls a sampler makes (2B rows, reuse state of the previous step) need no read-back once
    it passes the schedule's counts; without them the forward validates (and reads back)."""
    model = perturbed(ENAT(ENATConfig(**TINY, enc_depth=2, dec_depth=1))).eval()
    labels = torch.tensor([0, 3, 5, 5])
    ids = torch.full((4, 16), 32)
    with torch.no_grad(), count_syncs() as syncs:
        prev = model(ids, labels, logits_at="masked", num_masked=16)
        ids2 = ids.clone()
        ids2[:, :5] = 7  # reveal 5 tokens per row
        out = model(ids2, labels, prev=prev, logits_at="masked", num_masked=11)
    assert syncs == []
    with torch.no_grad(), count_syncs() as syncs:
        ref = model(ids2, labels, prev=model(ids, labels), logits_at="masked")
    assert syncs  # the validating path reads values back, by design
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.feat, ref.feat)


def test_nat_forward_with_counts_does_not_sync():
    model = perturbed(NAT(NATConfig(**TINY, depth=2))).eval()
    ids = torch.randint(0, 32, (2, 16))
    ids[:, 3:10] = 32
    with torch.no_grad(), count_syncs() as syncs:
        out = model(ids, torch.tensor([1, 2]), logits_at="masked", num_masked=7)
    assert syncs == [] and out.logits.shape == (2, 7, 32)


def test_sampling_steps_do_not_sync():
    """``generate`` passes the schedule's counts to the network: the read-backs it makes (the
    region size, the label range) happen once per call, not once per step."""
    from enat_lightning.sampling import generate

    model = perturbed(ENAT(ENATConfig(**TINY, enc_depth=2, dec_depth=1))).eval()
    counts = {}
    for steps in (2, 6):
        with count_syncs() as syncs:
            generate(model, torch.tensor([0, 3]), steps=steps, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
        counts[steps] = len(syncs)
    assert counts[2] == counts[6] <= 8, counts
