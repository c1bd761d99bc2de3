"""`enat fit|validate` / `lightning fit` through LightningCLI on a tiny in-memory config."""
import contextlib
import dataclasses
import io
import textwrap

import pytest
import torch
import yaml

from enat_lightning import cli
from enat_lightning.models import ENATConfig
from enat_lightning.training_cli import run_lightning_cli


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def tiny(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield write(tmp_path / "tiny.yaml", f"""\
        seed_everything: 0
        trainer:
          accelerator: cpu
          max_steps: 4
          enable_progress_bar: false
          enable_model_summary: false
          limit_val_batches: 1
          val_check_interval: 2
          check_val_every_n_epoch: null
          log_every_n_steps: 1
          logger:
            class_path: lightning.pytorch.loggers.TensorBoardLogger
            init_args: {{save_dir: {tmp_path}, name: run, version: ""}}
          callbacks:
            - class_path: lightning.pytorch.callbacks.ModelCheckpoint
              init_args: {{save_last: true, every_n_train_steps: 2}}
        model:
          net:
            class_path: enat_lightning.models.ENATConfig
            init_args: {{codebook_size: 32, num_classes: 4, grid: 4, width: 32, heads: 2, enc_depth: 2, dec_depth: 1}}
          lr: 0.003
          warmup_steps: 0
          ema_decay: 0.9
        data:
          class_path: enat_lightning.data.synthetic.SyntheticTokenDataModule
          init_args: {{num_classes: 4, codebook_size: 32, grid: 4, num_train: 64, num_val: 16, batch_size: 8}}
        """)
    torch.set_num_threads(threads)


def printed(args) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_lightning_cli(args + ["--print_config"]) == 0
    return yaml.safe_load(out.getvalue())


def test_fit_resume_and_validate(tiny, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", "-c", tiny]) == 0
    assert (run / "config.yaml").is_file()  # the resolved config is saved in the log dir
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["net"]["init_args"]["width"] == 32
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    # ONE config form: the network exactly as in the YAML (class_path / init_args), no private keys
    net = ckpt["hyper_parameters"]["net"]
    assert net["class_path"] == "enat_lightning.models.ENATConfig" and set(net) == {"class_path", "init_args"}
    assert net["init_args"] == {**dataclasses.asdict(ENATConfig()), **saved["model"]["net"]["init_args"]}
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"])  # AveragedModel
    assert (run / "checkpoints" / "last.ckpt.sha256").is_file()  # AtomicCheckpointIO's sidecar
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    for tag in ("train/loss", "train/acc", "lr", "grad_norm", "tokens/s", "samples/s", "val/loss", "val/acc"):
        assert tag in tags, tag

    from enat_lightning.module import ENATModule
    from enat_lightning.sampling.checkpoint import load_generator

    sampler_net, cfg = load_generator(run / "checkpoints" / "last.ckpt")  # the sampler reads the EMA weights
    restored = ENATModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")  # no architecture flags
    assert cfg == restored.cfg
    for (k, v), w in zip(restored.ema_net.state_dict().items(), sampler_net.state_dict().values()):
        assert torch.equal(v, w), k

    assert cli.main(["fit", "-c", tiny, "--trainer.max_steps", "6", "--ckpt_path", "last"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert cli.main(["validate", "-c", tiny, "--ckpt_path", "last"]) == 0


def test_configs_compose_and_print(tiny, tmp_path):
    abl = write(tmp_path / "abl.yaml", """\
        model:
          net:
            init_args: {enc_depth: 3, reuse_projection: false}
          reuse_prob: 0.0
        """)
    cfg = printed(["fit", "-c", tiny, "-c", abl])
    net = cfg["model"]["net"]["init_args"]
    assert net["enc_depth"] == 3 and net["width"] == 32  # merged, not replaced
    assert cfg["model"]["reuse_prob"] == 0.0 and cfg["model"]["lr"] == 0.003
    assert cli.lightning_main(["fit", "-c", tiny, "-c", abl, "--print_config"]) == 0


@pytest.mark.parametrize("body,needles", [
    ("model:\n  net:\n    init_args: {widht: 3}\n", ["model.net", "widht"]),
    ("model:\n  lr: fast\n", ["model.lr", "fast"]),
    ("trainer:\n  max_stepz: 3\n", ["max_stepz"]),
])
def test_config_errors_name_the_key_before_training(tiny, tmp_path, capsys, body, needles):
    bad = write(tmp_path / "bad.yaml", body)
    assert cli.main(["fit", "-c", tiny, "-c", bad]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("body,needle", [
    ("model:\n  reuse_prob: 1.5\n", "enat: error: model.reuse_prob must lie in [0, 1], got 1.5"),
    ("model:\n  net:\n    init_args: {grid: 8}\n", "enat: error: model.net.init_args.grid=8 but data.init_args.grid=4"),
    ("trainer:\n  callbacks:\n    - class_path: enat_lightning.callbacks.sample_grid.SampleGrid\n"
     "      init_args: {tokenizer: missing/vqgan.ckpt}\n",
     # (jsonargparse wraps it in its callback-list error, whose first line item is ours)
     "trainer.callbacks[SampleGrid].init_args.tokenizer: tokenizer file missing/vqgan.ckpt not found"),
])
def test_bad_values_fail_before_training_naming_the_key(tiny, tmp_path, capsys, body, needle):
    bad = write(tmp_path / "bad.yaml", body)
    assert cli.main(["fit", "-c", tiny, "-c", bad]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_demo_config_runs_fast_dev_run(tmp_path):
    """experiments/demo.yaml end to end (embedded data, demo tokenizer sample grid), one batch."""
    from pathlib import Path

    from enat_lightning.demo.data import ensure_demo_data

    repo = Path(__file__).resolve().parents[1]
    ensure_demo_data()
    import os

    cwd = os.getcwd()
    os.chdir(repo)  # the demo config's data paths are relative to the checkout
    try:
        rc = run_lightning_cli(["fit", "-c", "experiments/demo.yaml", "--trainer.fast_dev_run", "true",
                                "--trainer.logger.init_args.save_dir", str(tmp_path),
                                "--trainer.default_root_dir", str(tmp_path)])  # fast_dev_run drops the logger
    finally:
        os.chdir(cwd)
    assert rc == 0


def test_non_finite_loss_is_one_clear_line(tiny, tmp_path, capsys, monkeypatch):
    import enat_lightning.module as module

    monkeypatch.setattr(module, "masked_ce", lambda *a, **k: torch.tensor(float("inf"), requires_grad=True))
    assert cli.main(["fit", "-c", tiny]) == 2
    err = capsys.readouterr().err
    assert "enat: error: train/loss is inf at step 0" in err and "Traceback" not in err


def test_dotted_command_line_override_keeps_the_network_class():
    """`--model.net.init_args.width 32` on a NAT config changes one field and stays a NAT."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        cfg = printed(["fit", "-c", "experiments/nat_baseline.yaml", "--model.net.init_args.width", "32"])
    finally:
        os.chdir(cwd)
    assert cfg["model"]["net"]["class_path"].endswith("NATConfig")
    assert cfg["model"]["net"]["init_args"]["width"] == 32 and cfg["model"]["net"]["init_args"]["depth"] == 8


def test_data_module_is_given_the_composed_networks_grid(tmp_path):
    """grid / codebook_size / num_classes: one name each, the network's value linked into the data module
    (after every -c file and flag); no YAML repeats them."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    grid8 = write(tmp_path / "grid8.yaml", "model:\n  net:\n    init_args: {grid: 8}\n")
    cfg = printed(["fit", "-c", str(repo / "experiments" / "demo.yaml"), "-c", grid8,
                   "--model.net.init_args.codebook_size", "256"])
    assert not {"grid", "latent_side", "codebook_size", "num_classes"} & set(cfg["data"]["init_args"])  # linked
    from enat_lightning.module import ENATModule
    from enat_lightning.training_cli import ENATLightningCLI

    cli = ENATLightningCLI(ENATModule, datamodule_class=None, auto_configure_optimizers=False, run=False,
                           args=["-c", str(repo / "experiments" / "demo.yaml"), "-c", grid8, "--trainer.logger", "false",
                                 "--model.net.init_args.codebook_size", "256"])
    hp = cli.datamodule.hparams
    assert (hp["grid"], hp["codebook_size"], hp["num_classes"]) == (8, 256, 10)
    for yaml_file in (repo / "experiments").rglob("*.yaml"):
        text = yaml_file.read_text()
        assert "latent_side" not in text and "${model.net.init_args" not in text, yaml_file


def test_no_argv_swap_and_no_lightningcli_args_warning(tiny, monkeypatch, recwarn):
    import sys

    argv = ["enat", "fit", "-c", tiny, "--print_config"]
    monkeypatch.setattr(sys, "argv", list(argv))
    printed(["fit", "-c", tiny])
    assert sys.argv == argv
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
