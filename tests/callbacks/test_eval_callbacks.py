"""FIDCallback and GFLOPsCallback inside a real (tiny, CPU) Lightning fit."""
import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from enat_lightning.evaluation.frechet import save_stats
from enat_lightning.evaluation.flops import count_generation
from enat_lightning.callbacks.fid import FIDCallback
from enat_lightning.callbacks.flops import GFLOPsCallback
from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.evaluation import SamplerSettings, evaluate, load_feature_extractor
from enat_lightning.evaluation.reference import load_reference
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule

CFG = ENATConfig(codebook_size=32, num_classes=10, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    from enat_lightning.demo.data import fit_demo_tokenizer, load_digit_images
    from enat_lightning.demo.classifier import build_demo_classifier

    root = tmp_path_factory.mktemp("cb")
    images, _, _ = load_digit_images()
    shared_tok = tmp_path_factory.getbasetemp() / "shared_demo_tokenizer32.npz"  # session cache
    if not shared_tok.is_file():
        fit_demo_tokenizer(images[:300], codebook_size=32).save(shared_tok)
    tok = shared_tok
    cls = build_demo_classifier(tmp_path_factory.getbasetemp() / "shared_demo_classifier.pt", dataset="digits")  # session cache
    ex = load_feature_extractor(f"demo:{cls}")
    stats = save_stats(root / "stats.npz", load_reference("demo:digits:val", ex))
    return tok, cls, stats


def read_scalars(log_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_fid_and_flops_callbacks_in_fit(demo_files, tmp_path):
    tok, cls, stats = demo_files
    fid_cb = FIDCallback(ref_stats=str(stats), feature=f"demo:{cls}", tokenizer=f"demo:{tok}", every_n_steps=2,
                         num_samples=20, sampler=SamplerSettings(steps=3, cfg_scale=1.0), batch_size=10, is_splits=2, seed=5)
    flops_cb = GFLOPsCallback(sampler=SamplerSettings(steps=3), vq=None)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=logger, callbacks=[fid_cb, flops_cb],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    module = ENATModule(net=CFG, warmup_steps=1, reuse_prob=0.5)
    trainer.fit(module, SyntheticTokenDataModule(num_classes=10, codebook_size=32, grid=4, num_train=64,
                                                 batch_size=16))
    # every 2 steps (2, 4), and not again at fit end for the same step
    assert [h["step"] for h in fid_cb.history] == [2, 4]
    last = fid_cb.history[-1]
    # The logged numbers are evaluate() on the EMA network with the configured sampler settings.
    from enat_lightning.tokenizers import load_tokenizer
    from enat_lightning.evaluation.frechet import load_stats

    direct = evaluate(module.ema_net, load_tokenizer(f"demo:{tok}"), load_feature_extractor(f"demo:{cls}"),
                      num_samples=20, ref=load_stats(stats), seed=5, batch_size=10, is_splits=2,
                      settings=SamplerSettings(steps=3, cfg_scale=1.0))
    assert last["eval/fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert last["eval/accuracy"] == pytest.approx(direct["accuracy"])
    assert float(trainer.callback_metrics["eval/fid"]) == pytest.approx(direct["fid"], rel=1e-6)

    scalars = read_scalars(logger.log_dir)
    assert [s for s, _ in scalars["eval/fid"]] == [2, 4]
    assert "eval/is_mean" in scalars and "eval/accuracy" in scalars
    rep = count_generation(CFG, SamplerSettings(steps=3), vq=None)
    assert scalars["flops/gmacs_total"][0][1] == pytest.approx(rep.gmacs_total, rel=1e-6)
    assert flops_cb.summary["gmacs_actual"] == pytest.approx(rep.gmacs_actual)
    assert "flops" not in module.hparams  # the callback keeps its numbers in its own state

    ckpt_path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert "flops" not in ckpt["hyper_parameters"]
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("GFLOPsCallback")]
    assert state["summary"]["gmacs_total"] == pytest.approx(rep.gmacs_total) and state["summary"]["steps"] == 3
    restored = GFLOPsCallback()
    restored.load_state_dict(state)
    assert restored.summary == flops_cb.summary


def test_fid_callback_fails_early_on_missing_files(tmp_path):
    cb = FIDCallback(ref_stats=str(tmp_path / "missing.npz"), feature="demo")
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=[cb], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        trainer.fit(ENATModule(net=CFG), SyntheticTokenDataModule(num_classes=10, codebook_size=32, grid=4,
                                                                   num_train=16, batch_size=8))
    with pytest.raises(ValueError, match="every_n_steps"):
        FIDCallback(every_n_steps=-1)
