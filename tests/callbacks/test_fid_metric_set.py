"""FIDCallback logs the selected metric set (precision / recall against the held-out digits)."""
import lightning.pytorch as pl
import pytest

from enat_lightning.callbacks.fid import FIDCallback
from enat_lightning.data.synthetic import SyntheticTokenDataModule
from enat_lightning.evaluation import SamplerSettings
from enat_lightning.models import ENATConfig
from enat_lightning.module import ENATModule

CFG = ENATConfig(codebook_size=32, num_classes=10, grid=4, width=32, heads=2, enc_depth=2, dec_depth=1)


def test_selected_metrics_are_logged_and_nothing_else(tmp_path_factory):
    from enat_lightning.demo.classifier import build_demo_classifier
    from enat_lightning.demo.data import fit_demo_tokenizer, load_digit_images

    images, _, _ = load_digit_images()
    tok = tmp_path_factory.getbasetemp() / "shared_demo_tokenizer32.npz"  # session cache (as the other tests)
    if not tok.is_file():
        fit_demo_tokenizer(images[:300], codebook_size=32).save(tok)
    cls = build_demo_classifier(tmp_path_factory.getbasetemp() / "shared_demo_classifier.pt", dataset="digits")
    cb = FIDCallback(ref_stats="demo:digits:val", feature=f"demo:{cls}", tokenizer=f"demo:{tok}", num_samples=20,
                     sampler=SamplerSettings(steps=3, cfg_scale=1.0), batch_size=10, metrics="fid,precision,recall")
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=[cb], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(ENATModule(net=CFG, warmup_steps=1), SyntheticTokenDataModule(num_classes=10, codebook_size=32,
                                                                              grid=4, num_train=16, batch_size=8))
    (entry,) = cb.history
    assert set(entry) == {"step", "eval/fid", "eval/precision", "eval/recall"}
    assert 0 <= entry["eval/precision"] <= 1 and 0 <= entry["eval/recall"] <= 1
    assert float(trainer.callback_metrics["eval/recall"]) == pytest.approx(entry["eval/recall"])
    with pytest.raises(ValueError, match="unknown metric"):
        FIDCallback(metrics=["fid", "kid"])
