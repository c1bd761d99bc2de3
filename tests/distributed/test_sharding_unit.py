"""FSDP2 wrapping of ENATModule in one process (a gloo group of 1): every block of the online network
and of the EMA is its own unit, a training step runs, idle parameters get zero gradients, and the EMA
update after a teacher forward sees shards only. Fast; the 2-process runs are in test_fsdp.py."""
import pytest
import torch
import torch.distributed as dist

from enat_lightning.models import ENATConfig, NATConfig
from enat_lightning.module import ENATModule, update_ema
from enat_lightning.sharding import is_sharded, transformer_blocks

TINY = dict(codebook_size=32, num_classes=4, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1, embed_dropout=0.0)


@pytest.fixture
def mesh(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_every_block_of_net_and_ema_is_a_unit_and_a_step_trains(mesh):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    import lightning.pytorch as pl

    m = ENATModule(ENATConfig(**TINY), warmup_steps=0, reuse_prob=1.0)
    m.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    m.log = lambda *a, **k: None
    m._device_mesh = mesh  # what ModelParallelStrategy sets before configure_model
    m.configure_model()
    assert is_sharded(m) and isinstance(m.ema_net, FSDPModule)
    assert all(isinstance(b, FSDPModule) for net in (m.net, m.ema_net) for b in transformer_blocks(net))
    assert all(isinstance(p, DTensor) for p in m.net.parameters())
    loss = m.training_step({"tokens": torch.randint(32, (4, 16)), "label": torch.randint(4, (4,))}, 0)
    loss.backward()
    m.on_after_backward()
    assert all(p.grad is not None for p in m.net.parameters())  # idle ones: exact zeros, as under DDP
    assert all(isinstance(p, DTensor) for p in m.ema_net.parameters())  # the teacher forward resharded it
    update_ema(m.ema, m.net)  # AveragedModel's EMA step on the shards
    m.configure_model()  # a second call (validate after fit) leaves the wrapping alone
    with pytest.raises(TypeError, match="no encoder/decoder/blocks"):
        transformer_blocks(torch.nn.Linear(2, 2))
    assert len(transformer_blocks(ENATModule(NATConfig(codebook_size=32, num_classes=4, grid=4, width=32,
                                                             heads=2, depth=3), reuse_prob=0.0).net)) == 3

