"""`enat evaluate`: FID, sFID, IS, precision, recall (/ demo accuracy) of a checkpoint's samples or of a
samples.npz, with the protocol record; `--compare A.json B.json` puts two results side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from enat_lightning.sampling.settings import SamplerSettings
from enat_lightning.errors import MissingInput


def read_samples(path: Path):
    """``evaluation.load_samples`` with one-line errors naming the file (not an npz, labels that do not match)."""
    import zipfile

    from enat_lightning.errors import UserError
    from enat_lightning.evaluation import load_samples

    path = Path(path)
    if not path.exists():
        raise MissingInput(f"samples file {path} does not exist: make one with `enat sample --ckpt CKPT "
                                f"--tokenizer TOK --out DIR` (DIR/samples.npz)")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise UserError(f"samples file {path} is not an .npz archive (a text file, or truncated?); make one with "
                        f"`enat sample --out DIR --tokenizer ...` (DIR/samples.npz)")
    try:
        images, labels = load_samples(path)
    except (UserError, FileNotFoundError):
        raise
    except ValueError as e:
        raise UserError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - a damaged zip fails inside numpy
        raise UserError(f"samples file {path} cannot be read ({type(e).__name__}: {e}); write it again") from e
    if labels is not None and len(labels) != len(images):
        raise UserError(f"samples file {path} holds {len(images)} images but {len(labels)} labels; 'labels' must "
                        f"have one entry per image of 'arr_0'")
    return images, labels


# Said when SIGTERM stops an evaluation (nothing is written: the scores need every sample).
STOP_ADVICE = ("no output written; an evaluation starts again from the beginning when rerun. To sample resumably, run "
               "`enat sample --ckpt CKPT --out DIR` (it resumes after SIGTERM) and score DIR/samples.npz with "
               "`enat evaluate --samples`")


def evaluate(ckpt: Optional[Path] = None, samples: Optional[Path] = None, ref: Optional[Path] = None,
             inception: Optional[Path] = None, feature: Optional[str] = None, tokenizer: Optional[str] = None,
             num_samples: int = 50000, prompts_from: Optional[str] = None, per_class_balanced: bool = False,
             seed: int = 0, batch_size: int = 64, is_splits: int = 10, device: str = "cpu",
             save_samples: Optional[Path] = None, out: Optional[Path] = None, overwrite: bool = False,
             trust_checkpoint: bool = False, sampler: SamplerSettings = SamplerSettings(),
             metrics: Optional[str] = None, compare: Optional[list[Path]] = None, force: bool = False) -> dict:
    """FID, sFID, IS, precision, recall of a checkpoint (generating N samples) or of an existing samples.npz
    against a reference batch, with the protocol record; or --compare A.json B.json.

    Args:
        ckpt: a training / generator checkpoint (its EMA weights; the raw weights, with a note saying so, when it has no EMA copy)
        samples: instead of --ckpt: score an existing samples.npz (arr_0 uint8 (N,H,W,3), labels)
        ref: reference statistics .npz (`enat fid-stats`); omit for IS only
        inception: Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth)
        feature: 'demo', 'demo:PATH' or 'inception:PATH' (instead of --inception)
        tokenizer: with --ckpt: 'demo', 'demo:PATH', a VQGAN checkpoint or a JSON spec (to decode tokens to pixels)
        num_samples: number of samples to generate with --ckpt
        prompts_from: text models (FID-30K): `enat tokenize coco` shards of val2014; one caption (drawn with --seed) per image
        per_class_balanced: label of sample i = i mod num_classes (ADM / U-ViT protocol; else uniform random labels)
        seed: sampling seed
        batch_size: samples per sampler call
        is_splits: Inception Score splits
        device: cpu, cuda, cuda:1 ...
        save_samples: also write the generated samples.npz here
        out: write the results JSON here (atomically; checked for writability before any work)
        overwrite: replace an existing --out / --save_samples file that an earlier, different evaluation made
        trust_checkpoint: load a --ckpt holding pickled Python objects (can run code; only files you trust)
        sampler: sampler settings (defaults: the official ImageNet-256 setting)
        metrics: comma-separated metric set: fid,sfid,is,precision,recall,accuracy (default: all the inputs allow)
        compare: two result JSONs (--compare A.json B.json): print them side by side; refused when their
            protocols differ
        force: with --compare: compare results of different protocols anyway (the differences are listed)
    """
    import json

    if compare is not None:
        return compare_files(compare, force=force)

    from enat_lightning.commands.common import (check_device, feature_spec, load_features,
                                                writing)
    from enat_lightning.errors import UserError
    from enat_lightning.evaluation.metrics import parse_metrics
    from enat_lightning.evaluation.protocol import metric_label, metric_table, protocol_record
    from enat_lightning.evaluation.reference_batch import load_reference_batch
    from enat_lightning.fileio import atomic_write_text, sha256_file

    if (ckpt is None) == (samples is None):
        raise UserError("give exactly one of --ckpt (generate and score) and --samples (score a samples.npz)")
    if ckpt is not None and tokenizer is None:
        raise UserError("--ckpt needs --tokenizer to decode tokens into images ('demo' or a VQGAN checkpoint)")
    check_device(device)
    # What this evaluation is: a rerun with the same settings may replace its own --out, nothing else may.
    command = {"command": "enat evaluate", "ckpt": str(ckpt) if ckpt else None,
               "samples": str(samples) if samples else None, "ref": str(ref) if ref else None,
               "feature": feature_spec(inception, feature, None), "tokenizer": tokenizer, "num_samples": num_samples,
               "prompts_from": prompts_from, "per_class_balanced": per_class_balanced, "seed": seed,
               "is_splits": is_splits, "sampler": sampler.to_dict(), "metrics": metrics}  # JSON form: tuples as lists
    try:
        metric_set = parse_metrics(metrics)
    except ValueError as e:
        raise UserError(f"--metrics {metrics}: {e}") from e

    def same_run(path: Path) -> bool:
        try:
            return json.loads(path.read_text()).get("made_by") == command
        except (OSError, ValueError, AttributeError):
            return False

    import contextlib

    from enat_lightning.fileio import claim_output
    from enat_lightning.signals import stop_on_sigterm

    def same_run_samples(_path: Path) -> bool:  # the samples of this evaluation's own earlier --out
        return out is not None and Path(out).is_file() and same_run(Path(out))

    outputs = ((out, "--out", same_run), (save_samples, "--save_samples", same_run_samples))
    # The output rule (fileio.claim_output): before any work, an output that is not this evaluation's is refused
    # unless --overwrite, and a second concurrent writer is refused. SIGTERM stops after the current chunk.
    with contextlib.ExitStack() as claims, stop_on_sigterm("enat evaluate", STOP_ADVICE) as stop:
        for path, flag, ours in outputs:
            if path is not None:
                claims.enter_context(claim_output(path, overwrite=overwrite, is_ours=ours, flag=flag))
        # cheap checks of every input first (model, samples, stats), then the feature network, then the work
        if samples is not None:
            images, labels = read_samples(samples)
        else:
            from enat_lightning.sampling.checkpoint import load_generator

            from enat_lightning.tokenizers import check_codebook_size, load_tokenizer, spec_text

            model, _ = load_generator(ckpt, device=device, trust=trust_checkpoint)
            tok = load_tokenizer(tokenizer)  # before the feature network: a tokenizer that cannot decode is refused
            check_codebook_size(tok, model.cfg.codebook_size, f"the generator {ckpt}",
                                f"--tokenizer {spec_text(tokenizer)}")
        # the ADM layout as published: mu/sigma, mu_s/sigma_s, arr_0 (read only when precision/recall are asked for)
        stats = (load_reference_batch(ref, images=bool({"precision", "recall"} & set(metric_set)))
                 if ref is not None else None)
        extractor = load_features(command["feature"], device)
        if samples is not None:
            from enat_lightning.evaluation import score_images

            res = score_images(images, labels, extractor, stats, is_splits=is_splits, metrics=metric_set,
                               safe_point=stop.check)
            res["samples"] = {"path": str(samples), "sha256": sha256_file(samples)}
        else:
            from enat_lightning.evaluation import evaluate as run_evaluation
            from enat_lightning.sampling.checkpoint import checkpoint_sha256
            conditions = None
            if prompts_from is not None:  # text-to-image: sample i is conditioned on caption i
                from enat_lightning.data.coco import eval_captions

                conditions = eval_captions(model, prompts_from, num_samples, seed=seed)
            elif model.cfg.condition == "text":
                raise UserError(f"{ckpt} is a text model: give --prompts_from SHARDS (captions to sample)")
            if hasattr(tok, "to"):
                tok = tok.to(device)
            res = run_evaluation(model, tok, extractor, num_samples=num_samples, ref=stats, settings=sampler,
                                 per_class_balanced=per_class_balanced, seed=seed, batch_size=batch_size,
                                 is_splits=is_splits, return_samples=save_samples is not None, conditions=conditions,
                                 metrics=metric_set, safe_point=stop.check)
            if prompts_from is not None:
                res["prompts_from"] = str(prompts_from)
            images, labels = res.pop("images", None), res.pop("labels", None)
            res["ckpt"] = {"path": str(ckpt), "sha256": checkpoint_sha256(ckpt)}  # a file or an export folder
            res["tokenizer"] = tokenizer
            if save_samples is not None:
                from enat_lightning.sampling.io import save_npz

                with writing(save_samples):
                    save_npz(save_samples, arr_0=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
                res["samples"] = {"path": str(save_samples)}
        if stats is not None:
            res["ref"] = {"path": str(ref), "sha256": sha256_file(ref), "num_samples": stats.pool.num_samples}
        # the protocol record (how it was scored) and the subject (what was scored): docs/evaluation.md
        n = res["num_samples"]
        label_rule = (None if samples is not None else "per-class balanced (i mod C)" if per_class_balanced
                      else f"uniform random (seed {seed})")
        if prompts_from is not None:
            label_rule = f"captions of {prompts_from} (seed {seed})"
        res["protocol"] = protocol_record(num_samples=n, extractor=extractor, metrics=metric_set, ref=stats, ref_path=ref,
                                          labels=label_rule, is_splits=is_splits)
        res["subject"] = ({"samples": res["samples"]} if samples is not None else
                          {"checkpoint": res["ckpt"], "sampler": res["sampler"], "seed": seed, "tokenizer": tokenizer})
        res["labels"] = {k: metric_label(k, n) for k in ("fid", "sfid", "is_mean", "precision", "recall") if k in res}
        res["made_by"] = command
        text = json.dumps(res, indent=2)
        if out is not None:  # first: a failed write is the one error line, not a table followed by an error
            with writing(out):
                atomic_write_text(out, text + "\n")
        print(text)
        import sys

        print(metric_table(res), file=sys.stderr)
        return res


def compare_files(paths: list[Path], force: bool = False) -> dict:
    """``--compare A.json B.json``: the side-by-side table (stdout); refused when the protocols differ."""
    from enat_lightning.errors import UserError
    from enat_lightning.evaluation.protocol import compare_results, load_result

    if len(paths) != 2:
        raise UserError(f"--compare takes two result files (--compare A.json B.json), got {len(paths)}")
    a, b = (load_result(p) for p in paths)
    print(compare_results(a, b, names=tuple(str(p) for p in paths), force=force))
    return {"compared": [str(p) for p in paths]}


evaluate.greedy_lists = ("compare",)  # --compare A.json B.json (both values after one flag)
