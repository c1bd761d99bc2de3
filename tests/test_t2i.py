"""Text-to-image end to end on CPU: COCO-style shards (HashTextEncoder test double) -> ENATModule
trains a tiny text ENAT -> CFG sampling with reuse -> decode; plus sampler properties for text."""
from pathlib import Path

import pytest
import torch
from t2i_helpers import make_coco, tokenizer

from enat_lightning.data.coco import tokenize_coco
from enat_lightning.models import ENAT, Captions, ENATConfig
from enat_lightning.sampling import generate
from enat_lightning.text import HashTextEncoder

TINY = dict(codebook_size=16, grid=4, width=32, heads=4, enc_depth=2, dec_depth=1, text_dim=12, text_len=6,
            condition="text")


@pytest.fixture(scope="module")
def coco_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    images, caps, _ = make_coco(root)
    tokenize_coco(images, caps, tokenizer(), root / "shards", resolution=16,
                  text_encoder=HashTextEncoder(dim=12, length=6), progress=False)
    return root / "shards"


def fixed_batch_loss(module, batch):
    from enat_lightning.masking import apply_mask, masked_ce

    tokens = batch["tokens"]
    g = torch.Generator().manual_seed(0)
    masking = torch.rand(tokens.shape, generator=g) < 0.6
    masking[:, 0] = True
    masking[:, 1:] = masking[:1, 1:]  # same count per row
    net = module.net.eval()
    with torch.no_grad():
        logits = net(apply_mask(tokens, masking, 16), Captions(batch["text"], batch["text_mask"]),
                     logits_at="masked").logits
    net.train()
    return float(masked_ce(logits, tokens, masking, 0.0))


def test_tiny_text_model_trains_and_samples(coco_shards, tmp_path):
    import lightning.pytorch as pl

    from enat_lightning.data import TokenShardDataModule
    from enat_lightning.module import ENATModule

    torch.manual_seed(0)
    dm = TokenShardDataModule(str(coco_shards), batch_size=4, num_workers=0, shuffle_buffer=4, batches_per_epoch=5)
    module = ENATModule(net=ENATConfig(**TINY), lr=3e-3, betas=(0.9, 0.9), warmup_steps=0, p_uncond=0.1,
                        reuse_prob=0.5, ema_decay=0.5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["text"].shape == (4, 6, 12) and batch["text_mask"].dtype == torch.bool
    before = fixed_batch_loss(module, batch)
    trainer = pl.Trainer(max_steps=25, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    after = fixed_batch_loss(module, batch)
    print(f"fixed-batch masked CE before {before:.3f} after {after:.3f}")
    assert after < before - 0.3, (before, after)
    # the null caption came from the shards' manifest, into both networks
    ref = HashTextEncoder(dim=12, length=6).encode([""])
    for net in (module.net, module.ema_net):
        assert torch.equal(net.conditioner.null_mask, ref[1][0])
        torch.testing.assert_close(net.conditioner.null_text, ref[0][0], atol=1e-2, rtol=0)

    # checkpoint round trip: the config and null caption travel in it
    ckpt = tmp_path / "t2i.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = ENATModule.load_from_checkpoint(ckpt)
    assert isinstance(loaded.ema_net, ENAT) and loaded.cfg == module.cfg
    assert torch.equal(loaded.ema_net.conditioner.null_text, module.ema_net.conditioner.null_text)
    # ... and the identity of the encoder that made its captions (issue 25, item 10)
    recorded = torch.load(ckpt, map_location="cpu", weights_only=True)["text_encoder"]
    assert recorded == HashTextEncoder(dim=12, length=6).identity()

    enc = HashTextEncoder(dim=12, length=6)
    text, mask = enc.encode(["a red square", "a blue sky"])
    g = torch.Generator().manual_seed(0)
    ids = generate(loaded.ema_net, Captions(text, mask), steps=4, cfg_scale=2.0, generator=g)
    assert ids.shape == (2, 4, 4) and int(ids.min()) >= 0 and int(ids.max()) < 16
    images = tokenizer().decode(ids)
    assert images.shape == (2, 3, 16, 16)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = ENAT(ENATConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_generate_with_text_is_deterministic_and_uses_reuse():
    model = tiny_model()
    text, mask = HashTextEncoder(dim=12, length=6).encode(["a cat", "two dogs", ""])
    run = lambda **kw: generate(model, Captions(text, mask), steps=4, cfg_scale=3.0,  # noqa: E731
                                generator=torch.Generator().manual_seed(1), **kw)
    a, b = run(), run()
    assert torch.equal(a, b) and a.shape == (3, 4, 4)
    _, trace = run(return_trace=True)
    assert [s.had_prev for s in trace.steps] == [False, True, True, True]
    assert generate(model, Captions(text, mask), steps=4, generator=torch.Generator().manual_seed(1)).shape == (3, 4, 4)
    with pytest.raises(TypeError, match="text-conditioned"):
        generate(model, torch.tensor([0, 1, 2]), steps=4)


def test_cfg_uses_the_null_caption():
    model = tiny_model()
    enc = HashTextEncoder(dim=12, length=6)
    null_t, null_m = enc.encode([""])
    model.conditioner.set_null(null_t[0], null_m[0])
    text, mask = enc.encode(["a cat", "two dogs"])

    def run(t, m, scale):
        return generate(model, Captions(t, m), steps=4, cfg_scale=scale, samp_temp=1.0,
                        generator=torch.Generator().manual_seed(2), return_trace=True, trace_logits=True)[1]

    # prompting with the null caption itself: guidance is a no-op (cond == uncond rows)
    same = run(null_t.expand(2, -1, -1), null_m.expand(2, -1), 5.0)
    for s in same.steps:
        torch.testing.assert_close(s.cond_logits, s.uncond_logits)
    # a real prompt: the unconditional rows are the stored null caption's logits
    tr = run(text, mask, 5.0)
    ref = model(tr.steps[1].input_ids, Captions(null_t.expand(2, -1, -1), null_m.expand(2, -1)), logits_at="all").logits
    torch.testing.assert_close(tr.steps[1].uncond_logits, ref, atol=1e-5, rtol=1e-5)
    # another stored null caption changes the unconditional rows
    other_t, other_m = enc.encode(["something else entirely"])
    model.conditioner.set_null(other_t[0], other_m[0])
    tr2 = run(text, mask, 5.0)
    assert not torch.allclose(tr2.steps[1].uncond_logits, tr.steps[1].uncond_logits)


def save_text_checkpoint(path, model):
    torch.save({"hyper_parameters": {"net": model.cfg.to_dict()},
                "state_dict": {f"ema.{k}": v for k, v in model.state_dict().items()}}, path)


def test_encode_prompts_gives_the_condition():
    from enat_lightning.text import encode_prompts

    model = tiny_model()
    enc = HashTextEncoder(dim=12, length=6)
    caps = encode_prompts(["a cat", "two dogs", "a red bus"], enc, model.cfg)
    assert isinstance(caps, Captions) and len(caps) == 3
    text, mask = enc.encode(["a red bus", "a cat"])
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    direct = generate(model, Captions(text, mask), steps=4, cfg_scale=2.0, generator=g())
    via_rows = generate(model, caps[torch.tensor([2, 0])], steps=4, cfg_scale=2.0, generator=g())
    assert torch.equal(direct, via_rows)
    with pytest.raises(ValueError, match="text_dim=12"):
        encode_prompts(["x"], HashTextEncoder(dim=8, length=6), model.cfg)
    with pytest.raises(ValueError, match="--labels"):
        encode_prompts(["x"], enc, ENATConfig(codebook_size=16, grid=4, width=32, heads=4))


def test_enat_sample_prompts_cli(tmp_path, capsys):
    import numpy as np

    from enat_lightning.cli import main

    model = tiny_model()
    save_text_checkpoint(tmp_path / "t2i.ckpt", model)
    (tmp_path / "prompts.txt").write_text("a red square\n\n# comment\na blue sky\n")
    base = ["sample", "--ckpt", str(tmp_path / "t2i.ckpt"), "--prompts", str(tmp_path / "prompts.txt"),
            "--steps", "4", "--cfg", "2.0", "--device", "cpu", "--no-progress", "--batch-size", "3"]
    enc = ["--text-encoder", "hash:dim=12,length=6"]
    assert main(base + enc + ["--per-class", "2", "--out", str(tmp_path / "s")]) == 0
    with np.load(tmp_path / "s" / "samples.npz") as z:
        assert z["tokens"].shape == (4, 4, 4) and z["labels"].tolist() == [0, 0, 1, 1]
    assert (tmp_path / "s" / "prompts.txt").read_text().splitlines() == ["a red square", "a blue sky"]
    # the same samples as calling the library with the same seeds (sample i uses sample_seed(0, i))
    from enat_lightning.seeding import sample_generators

    text, mask = HashTextEncoder(dim=12, length=6).encode(["a red square", "a red square", "a blue sky"])
    ref = generate(model, Captions(text, mask), steps=4, cfg_scale=2.0,
                   generator=sample_generators(0, range(3)))
    with np.load(tmp_path / "s" / "samples.npz") as z:
        assert (z["tokens"][:3] == ref.numpy()).all()
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "t")]) == 2
    assert "--prompts needs --text_encoder" in capsys.readouterr().err
    assert main(base + ["--text-encoder", "hash:dim=8,length=6", "--out", str(tmp_path / "u")]) == 2
    assert "text_dim=12" in capsys.readouterr().err


COCO_YAML = Path(__file__).resolve().parents[1] / "experiments" / "enat_b_coco.yaml"


def test_enat_b_coco_yaml_values():
    """The experiment file builds ENAT-B text with the U-ViT COCO optimiser."""
    import yaml

    from enat_lightning.training_config import model_config, resolve_training_config

    path = COCO_YAML
    cfg = model_config(resolve_training_config([path]))
    assert isinstance(cfg, ENATConfig) and cfg.condition == "text"
    assert (cfg.width, cfg.heads, cfg.enc_depth, cfg.dec_depth, cfg.text_len, cfg.text_dim) == (768, 8, 15, 1, 77, 768)
    model = yaml.safe_load(path.read_text())["model"]
    assert (model["lr"], model["betas"], model["weight_decay"], model["warmup_steps"], model["p_uncond"]) == \
        (2e-4, [0.9, 0.9], 0.03, 5000, 0.1)


@pytest.mark.slow
def test_enat_b_coco_yaml_fast_dev_run(coco_shards, tmp_path):
    """Shrunk by a second -c file (the way to override a net: repeated -c), the experiment runs a
    fast_dev_run on the test shards through LightningCLI."""
    import yaml

    from enat_lightning.training_cli import run_lightning_cli

    path = COCO_YAML
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({
        "model": {"net": {"class_path": "enat_lightning.models.ENATConfig",
                          "init_args": {**TINY, "text_adaln": "none"}}},
        "data": {"init_args": {"train_shards": str(coco_shards), "val_shards": str(coco_shards), "batch_size": 2,
                               "num_workers": 0, "codebook_size": 16, "grid": 4}},
        "trainer": {"default_root_dir": str(tmp_path), "logger": False, "callbacks": []}}))
    rc = run_lightning_cli(["fit", "-c", str(path), "-c", str(tiny), "--trainer.fast_dev_run", "1",
                            "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.devices", "1"])
    assert rc == 0


def test_fid30k_prompts_from_val_shards(coco_shards):
    """FID-30K protocol, in miniature: one caption per val image -> Captions -> evaluate."""
    from enat_lightning.evaluation.frechet import stats_from_features
    from enat_lightning.evaluation.features import Features

    class ProjectionFeatures:  # a fixed random projection of 16x16 pixels -> 6 features, no classes
        name, num_features, predicts_labels = "toy-projection", 6, False
        w = torch.randn(3 * 16 * 16, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

        def __call__(self, images):
            return Features(torch.tanh(images.flatten(1).double() / 255.0 @ self.w), None)

    from enat_lightning.data.coco import eval_captions
    from enat_lightning.evaluation import SamplerSettings, evaluate

    model = tiny_model()
    caps = eval_captions(model, str(coco_shards), 3, seed=0)
    assert len(caps) == 3 and caps.text.dtype == torch.float16
    assert int(model.conditioner.null_mask.sum()) == 2  # the shards' null caption was adopted
    ref = stats_from_features(torch.randn(20, 6, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64), "toy-projection")
    res = evaluate(model, tokenizer(), ProjectionFeatures(), num_samples=3, ref=ref, conditions=caps,
                   settings=SamplerSettings(steps=3, cfg_scale=1.0), seed=0, batch_size=2, is_splits=1,
                   return_samples=True)
    assert res["num_samples"] == 3 and res["images"].shape == (3, 3, 16, 16) and res["fid"] > 0
    assert res["labels"].tolist() == [0, 1, 2]  # sample i <-> caption i
    with pytest.raises(ValueError, match="fewer than the 9"):
        eval_captions(model, str(coco_shards), 9)
    with pytest.raises(ValueError, match="2 conditions given"):
        evaluate(model, tokenizer(), ProjectionFeatures(), num_samples=3, ref=None, conditions=caps[:2])


def test_enat_evaluate_prompts_from_cli(coco_shards, tmp_path, capsys, monkeypatch):
    import json

    from enat_lightning.cli import main

    save_text_checkpoint(tmp_path / "t2i.ckpt", tiny_model())
    tok = tokenizer().save(tmp_path / "tok.npz")

    class Features16:  # stands in for Inception: 16x16 images -> 4 features
        name, num_features, predicts_labels = "toy16", 4, False

        def __call__(self, images):
            from enat_lightning.evaluation.features import Features

            w = torch.randn(3 * 16 * 16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            return Features(images.flatten(1).double() / 255.0 @ w, None)

    import enat_lightning.evaluation as ev

    monkeypatch.setattr(ev, "load_feature_extractor", lambda spec, device="cpu": Features16())
    rc = main(["evaluate", "--ckpt", str(tmp_path / "t2i.ckpt"), "--prompts-from", str(coco_shards),
               "--num-samples", "4", "--tokenizer", f"demo:{tok}", "--feature", "demo", "--steps", "3",
               "--batch-size", "2", "--is-splits", "2", "--out", str(tmp_path / "res.json")])
    assert rc == 0
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["num_samples"] == 4 and res["prompts_from"] == str(coco_shards) and "accuracy" not in res
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(tmp_path / "t2i.ckpt"), "--prompts-from", str(coco_shards),
                 "--num-samples", "9", "--tokenizer", f"demo:{tok}", "--feature", "demo"]) == 2
    assert "fewer than the 9" in capsys.readouterr().err


def test_flops_count_for_text_models():
    from enat_lightning.evaluation.flops import count_generation
    from enat_lightning.sampling.settings import SamplerSettings

    both = count_generation(ENATConfig(**TINY), SamplerSettings(steps=4), vq=None)
    dec = count_generation(ENATConfig(**TINY, text_in="decoder"), SamplerSettings(steps=4), vq=None)
    longer = count_generation(ENATConfig(**{**TINY, "text_len": 12}), SamplerSettings(steps=4), vq=None)
    assert len(both.per_step) == 4 and 0 < dec.gmacs_total < both.gmacs_total < longer.gmacs_total
    # the once-per-sample caption work is counted exactly: projection T x Dt x D and, per block
    # reading captions, their keys/values T x D x 2D, for the caption and the empty caption
    T, Dt, D = 6, 12, 32
    assert both.gmacs_condition * 1e9 == pytest.approx(2 * (T * Dt * D + 3 * T * D * 2 * D), rel=1e-9)
    assert dec.gmacs_condition * 1e9 == pytest.approx(2 * (T * Dt * D + 1 * T * D * 2 * D), rel=1e-9)
    assert count_generation(ENATConfig(**TINY), SamplerSettings(steps=4, cfg_scale=0.0), vq=None).gmacs_condition * 1e9 == \
        pytest.approx(T * Dt * D + 3 * T * D * 2 * D, rel=1e-9)


def test_enat_flops_on_the_coco_experiment(capsys):
    """`enat flops -c experiments/enat_b_coco.yaml` counts the text model like a class model."""
    import json

    from enat_lightning.cli import main

    assert main(["flops", "-c", str(COCO_YAML), "--steps", "8", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["config"]["condition"] == "text" and rep["reuse"] and len(rep["per_step"]) == 8
    # ENAT-B, 77 CLIP tokens: caption projection + 16 blocks' keys/values, caption and empty caption
    assert rep["gmacs_condition"] * 1e9 == pytest.approx(2 * (77 * 768 * 768 + 16 * 77 * 768 * 1536), rel=1e-9)
    assert 90 < rep["gmacs_total"] < 100


def test_enat_analyze_on_a_text_checkpoint(tmp_path, capsys):
    """`enat analyze similarity|attention-maps` sample a text checkpoint from --prompts; caption keys
    are neither visible nor [MASK], so a text model's two masses of a query kind sum to < 1."""
    import csv

    from enat_lightning.analysis.attention_maps import run_attention_maps
    from enat_lightning.cli import main

    model = tiny_model()
    save_text_checkpoint(tmp_path / "t2i.ckpt", model)
    (tmp_path / "prompts.txt").write_text("a red square\na blue sky\n")
    common = ["--ckpt", str(tmp_path / "t2i.ckpt"), "--steps", "3", "--num-samples", "3", "--batch-size", "2",
              "--prompts", str(tmp_path / "prompts.txt"), "--text-encoder", "hash:dim=12,length=6"]
    assert main(["analyze", "similarity", *common, "--out", str(tmp_path / "sim")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "sim" / "similarity.csv")))) > 0
    assert main(["analyze", "attention-maps", *common, "--out", str(tmp_path / "am")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "am" / "attention_maps.csv")))
    assert len(rows) == 3 * 3
    capsys.readouterr()
    assert main(["analyze", "similarity", *common[:8], "--out", str(tmp_path / "x")]) == 2
    assert "text model" in capsys.readouterr().err
    caps = HashTextEncoder(dim=12, length=6).encode(["a cat", "two dogs"])
    res = run_attention_maps(model, Captions(*caps), steps=3, generator=torch.Generator().manual_seed(0))
    m = res.masses
    total = (m["mask_to_visible"] + m["mask_to_mask"])[-1]  # the decoder block: [MASK] queries, every step
    assert bool((total < 1 - 1e-4).all()) and bool((total > 0).all())


def test_text_checkpoint_commands_ask_for_prompts(coco_shards, tmp_path, capsys):
    from enat_lightning.cli import main

    save_text_checkpoint(tmp_path / "t2i.ckpt", tiny_model())
    assert main(["sample", "--ckpt", str(tmp_path / "t2i.ckpt"), "--per-class", "1", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 2
    assert "--prompts" in capsys.readouterr().err
    tok = tokenizer().save(tmp_path / "tok.npz")
    assert main(["evaluate", "--ckpt", str(tmp_path / "t2i.ckpt"), "--num-samples", "2", "--tokenizer",
                 f"demo:{tok}", "--feature", "demo"]) == 2
    assert "--prompts_from" in capsys.readouterr().err


def test_masked_token_loss_on_text_shards(coco_shards):
    """The validation loss of studies / analyses reads text shards as tokens + Captions."""
    from enat_lightning.analysis.tokens import load_tokens, masked_token_loss

    tokens, caps = load_tokens(str(coco_shards), limit=3)
    assert tokens.shape == (3, 16) and isinstance(caps, Captions) and caps.text.shape == (3, 6, 12)
    model = tiny_model()
    m = masked_token_loss(model, tokens, caps, batch_size=2)
    assert m["loss"] > 0 and 0 <= m["acc"] <= 1
    blank = Captions(torch.zeros_like(caps.text), torch.zeros_like(caps.mask))
    assert masked_token_loss(model, tokens, blank, batch_size=2)["loss"] != m["loss"]  # captions are read


def test_fid_callback_samples_captions_for_a_text_model(coco_shards, tmp_path, monkeypatch):
    """FIDCallback on a text model: sample i is conditioned on the i-th val caption (prompts_from); a text
    model without prompts_from, or a class model with it, is refused at setup."""
    from types import SimpleNamespace

    import enat_lightning.callbacks.fid as fid_module
    from enat_lightning.callbacks.fid import FIDCallback
    from enat_lightning.evaluation.features import Features
    from enat_lightning.evaluation.frechet import save_stats, stats_from_features
    from enat_lightning.sampling.settings import SamplerSettings

    class Features16:  # stands in for Inception: 16x16 images -> 4 features
        name, num_features, predicts_labels = "toy16", 4, False
        w = torch.randn(3 * 16 * 16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

        def __call__(self, images):
            return Features(images.flatten(1).double() / 255.0 @ self.w, None)

    monkeypatch.setattr(fid_module, "load_feature_extractor", lambda spec, device="cpu": Features16())
    ref = tmp_path / "ref.npz"
    save_stats(ref, stats_from_features(torch.randn(20, 4, generator=torch.Generator().manual_seed(0),
                                                    dtype=torch.float64), "toy16"))
    tok = tokenizer().save(tmp_path / "tok.npz")
    model = tiny_model()
    module = SimpleNamespace(cfg=model.cfg, net=model, ema_net=model, device=torch.device("cpu"))
    trainer = SimpleNamespace(global_step=7, callback_metrics={}, is_global_zero=True, loggers=[])

    with pytest.raises(ValueError, match="prompts_from"):
        FIDCallback(ref_stats=str(ref), feature="toy", tokenizer=f"demo:{tok}").setup(trainer, module, "fit")
    cb = FIDCallback(ref_stats=str(ref), feature="toy", tokenizer=f"demo:{tok}", num_samples=3, batch_size=2,
                     is_splits=1, sampler=SamplerSettings(steps=3, cfg_scale=1.0), prompts_from=str(coco_shards))
    cb.setup(trainer, module, "fit")
    res = cb.run(trainer, module)
    assert res["num_samples"] == 3 and res["fid"] > 0 and len(cb._captions) == 3
    assert trainer.callback_metrics["eval/fid"] == pytest.approx(res["fid"])
    class_module = SimpleNamespace(cfg=ENATConfig(), device=torch.device("cpu"))
    with pytest.raises(ValueError, match="class models sample labels"):
        cb.setup(trainer, class_module, "fit")
