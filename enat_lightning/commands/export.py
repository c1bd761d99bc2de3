"""`enat export`: a checkpoint -> a self-describing folder anyone can load without pickle.

The folder (format: ``enat_lightning/models/pretrained.py``) holds the EMA generator as
``model.safetensors`` + ``config.json``, the sampler preset it is meant to be used with
(``sampler.yaml``), the tokenizer it expects (``tokenizer.json``; with ``--with_tokenizer`` its weights
as ``tokenizer.safetensors``), the metrics it was scored with (``metrics.json``, when given) and a
generated model card (``README.md``); ``manifest.json`` records the sha256 of each file. Every
command that takes ``--ckpt`` accepts the folder.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from enat_lightning.sampling.settings import SamplerSettings

SAMPLER_FILE = "sampler.yaml"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"


def export(ckpt: Path, out: Path, tokenizer: Optional[str] = None, with_tokenizer: bool = False,
           metrics: Optional[list[Path]] = None, sampler: SamplerSettings = SamplerSettings(),
           overwrite: bool = False, trust_checkpoint: bool = False) -> dict:
    """Export a checkpoint's EMA generator as a safe, self-describing folder (safetensors + config + model card).

    Args:
        ckpt: checkpoint from `enat fit` / `enat import-official` (or an export folder, to re-export)
        out: the export folder (new or empty; an earlier export only with --overwrite)
        tokenizer: the tokenizer the model expects ('demo', a VQGAN checkpoint, a JSON spec); recorded by identity
        with_tokenizer: also store the tokenizer's weights (tokenizer.safetensors), so `--tokenizer DIR` works
        metrics: results JSON(s) of `enat evaluate --out` or the demo's demo_results.json: copied with their protocol into metrics.json and the model card
        sampler: the sampler preset to ship, when any setting is given (--steps 8 ...); otherwise the settings of the first --metrics file, else those of the training run's FID callback, else the defaults
        overwrite: replace an earlier export in --out (a folder that is not an export is never replaced)
        trust_checkpoint: load a --ckpt holding pickled Python objects (can run code; only files you trust)
    """
    import yaml

    from enat_lightning.models.pretrained import check_export_target, network_files, write_export
    from enat_lightning.sampling.checkpoint import checkpoint_sha256, load_checkpoint_dict, load_generator

    out, ckpt = Path(out), Path(ckpt)
    check_export_target(out, overwrite=overwrite)
    records = [read_metrics(p) for p in metrics or []]
    raw = load_checkpoint_dict(ckpt, trust=trust_checkpoint)
    model, cfg = load_generator(ckpt, trust=trust_checkpoint)
    settings, sampler_source = choose_sampler(sampler, records, ckpt)
    files = network_files(model)
    files[SAMPLER_FILE] = (f"# sampler preset of this export ({sampler_source}); enat sample -c {SAMPLER_FILE} ...\n"
                           + yaml.safe_dump({"sampler": settings.to_dict()}, sort_keys=False)).encode()
    tok_info = None
    if tokenizer is not None:
        from enat_lightning.tokenizers import check_codebook_size, load_tokenizer, spec_text
        from enat_lightning.tokenizers.exported import INFO, tokenizer_files

        tok = load_tokenizer(tokenizer)
        # an export names the tokenizer its users will decode with: one that cannot decode it is refused here
        check_codebook_size(tok, cfg.codebook_size, f"the generator {ckpt}", f"--tokenizer {spec_text(tokenizer)}")
        files.update(tokenizer_files(tok, tokenizer, with_tokenizer))
        tok_info = json.loads(files[INFO])
    elif with_tokenizer:
        from enat_lightning.errors import UserError

        raise UserError("--with_tokenizer needs --tokenizer (the tokenizer whose weights to store)")
    if records:
        files[METRICS_FILE] = (json.dumps(records, indent=2) + "\n").encode()
    source = {"ckpt": str(ckpt), "sha256": checkpoint_sha256(ckpt), "global_step": int(raw.get("global_step") or 0),
              "weights": "ema" if any(k.startswith("ema.") for k in raw["state_dict"]) else "net"}
    data = training_data(raw)
    card = model_card(out.name, cfg, settings, sampler_source, source, tok_info, data, records)
    files[CARD_FILE] = card.encode()
    meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": source,
            "training_data": data}
    write_export(out, files, meta, overwrite=overwrite)
    print(f"exported {ckpt} ({source['weights']} weights, step {source['global_step']}) -> {out}/: "
          f"{', '.join(sorted([*files, 'manifest.json']))}")
    return {"out": str(out), "files": sorted([*files, "manifest.json"]), "sampler": settings.to_dict(),
            "sampler_source": sampler_source}


def read_metrics(path: Path) -> dict:
    """A results JSON as {"file", "sha256", "metrics": [{name: value}], "protocol": {...}}."""
    from enat_lightning.errors import UserError
    from enat_lightning.fileio import sha256_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--metrics {path} does not exist (write one with `enat evaluate ... --out FILE`)")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"--metrics {path} is not JSON ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f"--metrics {path}: expected a JSON object (enat evaluate --out / demo_results.json)")

    def scalars(d: dict) -> dict:
        return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    if isinstance(data.get("rows"), list):  # demo_results.json: one row per sampler variant
        rows = [{"row": r.get("sampler", str(i)), **scalars(r)} for i, r in enumerate(data["rows"]) if isinstance(r, dict)]
        settings = data.get("settings") or {}
        protocol = {**{k: v for k, v in settings.items() if k != "sampler"}, "sampler": settings.get("sampler"),
                    "feature_network": next((r.get("feature_network") for r in data["rows"]
                                             if isinstance(r, dict) and r.get("feature_network")), None)}
        sampler = settings.get("sampler")
    else:  # enat evaluate --out
        rows = [{"row": "evaluate", **scalars(data)}]
        protocol = {k: data.get(k) for k in ("num_samples", "feature", "sampler", "seed", "per_class_balanced",
                                             "ref", "made_by") if k in data}
        sampler = data.get("sampler")
    return {"file": str(path), "sha256": sha256_file(path), "metrics": rows, "protocol": protocol, "sampler": sampler}


def choose_sampler(given: SamplerSettings | None, records: list[dict], ckpt: Path) -> tuple[SamplerSettings, str]:
    """The preset to ship and where it came from: the command line, the first metrics file, the training
    run's FID callback (``config.yaml`` that LightningCLI saved beside ``checkpoints/``), else the defaults."""
    from enat_lightning.sampling.settings import as_settings

    if given is not None and given != SamplerSettings():
        return given, "given on the command line"
    for r in records:
        if isinstance(r.get("sampler"), dict):
            return as_settings(r["sampler"]), f"the settings {r['file']} was evaluated with"
    config = Path(ckpt).resolve().parent.parent / "config.yaml"
    if Path(ckpt).is_file() and config.is_file():
        from enat_lightning.demo.pipeline import config_sampler

        try:
            return config_sampler(config), f"the FID callback of the training run, {config}"
        except (ValueError, TypeError, OSError):
            pass
    return SamplerSettings(), "the package defaults (the official ImageNet-256 setting): no evaluation was given"


def training_data(ckpt: dict) -> dict | None:
    """Identity of the training shards' manifest (where, sha256, counts, tokenizer) from the datamodule's hparams."""
    dm = ckpt.get("datamodule_hyper_parameters") or {}
    spec = dm.get("train_shards") if isinstance(dm, dict) else None
    if not spec:
        return None
    try:
        from enat_lightning.data.reader import resolve_manifest
        from enat_lightning.fileio import sha256_file

        m, _, where = resolve_manifest(str(spec))
    except Exception as e:  # noqa: BLE001 - the card records what is known; the shards may live elsewhere now
        return {"train_shards": str(spec), "manifest": None, "note": f"manifest not readable here ({type(e).__name__})"}
    digest = sha256_file(where) if Path(where).is_file() else None
    return {"train_shards": str(spec), "manifest": where, "manifest_sha256": digest, "sample_count": m.sample_count,
            "codebook_size": m.codebook_size, "latent_side": m.latent_side, "num_classes": m.num_classes,
            "tokenizer": m.tokenizer}


def model_card(name: str, cfg, settings: SamplerSettings, sampler_source: str, source: dict, tok_info: dict | None,
               data: dict | None, records: list[dict]) -> str:
    """The export's README.md: what the model is, how to load it, what it costs and how it scored."""
    from enat_lightning.evaluation.flops import count_generation
    from enat_lightning.models.stats import count_parameters

    net = type(cfg).__name__.replace("Config", "")
    rep = count_generation(cfg, settings)
    n_params = count_parameters(cfg)
    kind = "text-to-image" if getattr(cfg, "condition", "class") == "text" else f"class-conditional ({cfg.num_classes} classes)"
    tok_flag = f" --tokenizer {name}" if tok_info and tok_info.get("weights") else " --tokenizer TOKENIZER"
    lines = [f"# {name}: {net} image generator", "",
             f"A {kind} {net} token generator ({cfg.grid}x{cfg.grid} tokens, codebook {cfg.codebook_size}), exported by "
             f"[enat-lightning](https://github.com/LeapLabTHU/ENAT) `enat export`. Weights: safetensors (no pickle; "
             f"loading runs no code). Every file's sha256 is in `manifest.json` and checked on load.", "",
             "## Use", "", "```bash",
             f"enat sample --ckpt {name} --labels 0,1,2{tok_flag} --out samples/{name} -c {name}/{SAMPLER_FILE}",
             f"enat app --ckpt {name}", "```", "", "```python",
             f"from enat_lightning.models import {net}", f"model = {net}.from_pretrained(\"{name}\")", "```", "",
             "## Architecture", "", f"`enat_lightning.models.{type(cfg).__name__}` (`config.json`), "
             f"**{n_params:,} parameters** ({n_params / 1e6:.2f} M).", "", "| field | value |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in json.loads(json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else {})).items()]
    lines += ["", "## Sampler preset (`sampler.yaml`)", "", f"Source: {sampler_source}.", "",
              f"**{rep.gmacs_total:.4g} GFLOPs per image** at this preset (the paper's convention: multiply-accumulates, "
              f"conditional + unconditional passes, all {settings.steps} steps, tokenizer decoder excluded; "
              f"`enat flops --ckpt {name} -c {name}/{SAMPLER_FILE}`); our sampler runs {rep.gmacs_actual:.4g}.", "",
              "| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in settings.to_dict().items()]
    lines += ["", "## Tokenizer", ""]
    if tok_info is None:
        lines.append("Not recorded (exported without `--tokenizer`): sample with the tokenizer the training shards were "
                     "made with (below).")
    else:
        ident = tok_info["identity"]
        lines.append(f"`{ident.get('kind')}`, weights sha256 `{ident.get('weights_sha256')}`; "
                     + ("its weights are in `tokenizer.safetensors` (`--tokenizer " + name + "`)."
                        if tok_info.get("weights") else f"not bundled: load `{tok_info.get('spec')}`."))
    lines += ["", "## Training data", ""]
    if not data:
        lines.append("Not recorded in the checkpoint (no datamodule hyper-parameters).")
    else:
        lines += [f"- shards: `{data['train_shards']}`"]
        if data.get("manifest"):
            lines += [f"- manifest: `{data['manifest']}`, sha256 `{data.get('manifest_sha256')}`",
                      f"- {data['sample_count']} samples, {data['latent_side']}x{data['latent_side']} tokens, codebook "
                      f"{data['codebook_size']}, {data['num_classes']} classes, tokenizer `{data['tokenizer'].get('kind')}` "
                      f"(weights sha256 `{data['tokenizer'].get('weights_sha256')}`)"]
        else:
            lines.append(f"- manifest: {data.get('note')}")
    lines += ["", "## Metrics", ""]
    if not records:
        lines.append("None given at export (`enat export --metrics RESULTS.json`).")
    for r in records:
        lines += [f"From `{r['file']}` (sha256 `{r['sha256'][:16]}…`; full record in `{METRICS_FILE}`):", ""]
        keys = [k for k in dict.fromkeys(k for row in r["metrics"] for k in row) if k != "row"]
        lines += ["| row | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += ["| " + " | ".join([str(row.get("row"))] + [_fmt(row.get(k)) for k in keys]) + " |" for row in r["metrics"]]
        proto = {k: v for k, v in r["protocol"].items() if k != "sampler" and v is not None}
        lines += ["", "Protocol: " + ", ".join(f"{k} `{json.dumps(v)}`" for k, v in proto.items()), ""]
    lines += ["", "## Source", "", f"`{source['ckpt']}` (sha256 `{source['sha256']}`), step {source['global_step']}, "
              f"{source['weights']} weights.", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
