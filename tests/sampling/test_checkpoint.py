"""Generator checkpoints: the format training writes, EMA preference, clear errors."""
import pytest
import torch

from enat_lightning.models import ENAT, ENATConfig, NAT, NATConfig
from enat_lightning.sampling.checkpoint import load_generator, save_generator_checkpoint

CFG = ENATConfig(codebook_size=32, num_classes=5, grid=4, width=32, heads=4, enc_depth=2, dec_depth=1)


def _weights(seed, cfg=CFG):
    torch.manual_seed(seed)
    return (ENAT if isinstance(cfg, ENATConfig) else NAT)(cfg).state_dict()


def test_prefers_ema_weights_over_net(tmp_path):
    net, ema = _weights(0), _weights(1)
    sd = {**{f"net.{k}": v for k, v in net.items()}, **{f"ema.{k}": v for k, v in ema.items()}}
    torch.save({"hyper_parameters": {"net": CFG.to_dict(), "lr": 1e-4}, "state_dict": sd}, tmp_path / "a.ckpt")
    model, cfg = load_generator(tmp_path / "a.ckpt")
    assert cfg == CFG and not model.training
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_falls_back_to_net_and_reads_nat(tmp_path):
    cfg = NATConfig(codebook_size=32, num_classes=5, grid=4, width=32, heads=4, depth=2)
    net = _weights(2, cfg)
    torch.save({"hyper_parameters": {"net": cfg.to_dict()}, "state_dict": {f"net.{k}": v for k, v in net.items()}},
               tmp_path / "n.ckpt")
    model, got = load_generator(tmp_path / "n.ckpt")
    assert isinstance(model, NAT) and got == cfg


def test_averaged_model_layout(tmp_path):
    ema = _weights(3)
    sd = {f"ema.module.{k}": v for k, v in ema.items()} | {"ema.n_averaged": torch.tensor(7)}
    torch.save({"hyper_parameters": {"net": CFG.to_dict()}, "state_dict": sd}, tmp_path / "e.ckpt")
    model, _ = load_generator(tmp_path / "e.ckpt")
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_save_round_trip_is_atomic(tmp_path):
    w = _weights(4)
    save_generator_checkpoint(tmp_path / "x.ckpt", CFG, w, extra={"note": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt", "x.ckpt.sha256"]  # + its checksum
    model, cfg = load_generator(tmp_path / "x.ckpt")
    assert all(torch.equal(v, w[k]) for k, v in model.state_dict().items())
    assert torch.load(tmp_path / "x.ckpt", weights_only=True)["note"] == 1


def test_errors_name_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_generator(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "h.ckpt")
    with pytest.raises(ValueError, match=r"h.ckpt: 'hyper_parameters' has no model config under 'net'"):
        load_generator(tmp_path / "h.ckpt")
    torch.save({"hyper_parameters": {"net": CFG.to_dict()}, "state_dict": {"other.x": torch.zeros(1)}},
               tmp_path / "k.ckpt")
    with pytest.raises(ValueError, match="no keys starting with"):
        load_generator(tmp_path / "k.ckpt")
    w = _weights(5)
    w.pop("head.bias")
    torch.save({"hyper_parameters": {"net": CFG.to_dict()}, "state_dict": {f"ema.{k}": v for k, v in w.items()}},
               tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match=r"missing \['head.bias'\]"):
        load_generator(tmp_path / "m.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt cannot be read"):
        load_generator(tmp_path / "bad.ckpt")


def test_sampling_package_does_not_import_lightning():
    import subprocess
    import sys

    code = ("import sys, enat_lightning.sampling, enat_lightning.sampling.runner, enat_lightning.sampling.checkpoint; "
            "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules, 'lightning imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
