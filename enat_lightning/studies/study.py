"""Studies: train every row of a paper table from its YAMLs, evaluate it, and put our numbers beside
the paper's (paper Fig. 2, Tables 1, 2, 6).

A study spec (``experiments/studies/*.yaml``) is plain data:

    name: table2_allocation
    title: "Compute allocation N_E/N_D (paper Table 2)"
    base: [experiments/enat_s.yaml]           # composed first for every row (optional)
    metrics: [gflops, fid]                   # columns; the paper's numbers use the same keys
    sampling: {steps: 8, cfg_scale: 2.5}     # SamplerSettings fields for FID / GFLOPs (omitted: its
                                             # defaults; reuse follows each row's reuse_prob)
    rows:
      - name: "8/8"
        configs: [experiments/ablations/table2_8_8.yaml]
        paper: {gflops: 40.2, fid: 5.50}

Each row trains with ``enat fit -c base... -c configs... -c overrides...`` (LightningCLI, in process),
writes ``<out>/<row>/final.ckpt`` and is then evaluated:

  masked_loss  masked-token cross-entropy of the EMA network on the row's validation shards
  gflops       GMACs of one 8-step generation (``evaluation.flops``, the paper's convention, no VQ decoder)
  fid / demo_fid  sample quality through ``evaluation`` (``--metric``)

A row whose ``final.ckpt`` exists is not retrained (rerun the command to resume a study). Results go to
``<out>/results.csv`` and ``<out>/results.md``. Paths inside a spec are relative to the working directory,
else to the spec's folder or one of its parents (the repository root).

Imports no Lightning at module level (the training entry is imported inside ``train_row``).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from enat_lightning.fileio import atomic_write_bytes, atomic_writer, write_checksum
from enat_lightning.training_config import get as _get

from enat_lightning.analysis.tokens import load_tokens, masked_token_loss
from enat_lightning.analysis.report import markdown_table, write_csv
from enat_lightning.sampling.settings import SamplerSettings
from enat_lightning.errors import InvalidInput, MissingInput

KNOWN_METRICS = ("masked_loss", "gflops", "fid", "demo_fid", "is", "demo_is", "accuracy")
METRIC_TITLES = {"masked_loss": "masked loss", "gflops": "GFLOPs", "fid": "FID", "demo_fid": "demo-FID",
                 "is": "IS", "demo_is": "demo-IS", "accuracy": "class acc.", "sfid": "sFID", "demo_sfid": "demo-sFID",
                 "precision": "precision", "recall": "recall"}


@dataclass
class StudyRow:
    name: str
    configs: list[Path]
    paper: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)


@dataclass
class Study:
    name: str
    title: str
    path: Path
    base: list[Path]
    metrics: list[str]
    sampling: dict
    rows: list[StudyRow]


def resolve_path(p: str | os.PathLike, spec_path: Path) -> Path:
    """A path from a spec: as given (cwd), else beside the spec, else beside one of its parents."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    for folder in [spec_path.parent, *spec_path.resolve().parents]:
        if (folder / p).exists():
            return folder / p
    raise MissingInput(f"{spec_path}: config file {p} not found (relative to the working directory or "
                            f"the spec's folders)")


def _read_yaml(path: Path) -> dict:
    if not Path(path).is_file():
        raise MissingInput(f"study file {path} does not exist")
    try:
        d = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise InvalidInput(f"{path}: not valid YAML ({e})") from e
    return d if isinstance(d, dict) else {}


def load_study(path: str | os.PathLike) -> Study:
    """Parses a study spec; every config it names must exist. Errors name the file and key."""
    path = Path(path)
    d = _read_yaml(path)
    if "rows" not in d:
        raise InvalidInput(f"{path}: not a study spec (no 'rows' key); see experiments/studies/")
    unknown = sorted(set(d) - {"name", "title", "base", "metrics", "sampling", "rows", "notes"})
    if unknown:
        raise InvalidInput(f"{path}: unknown key(s) {unknown}")
    metrics = list(d.get("metrics") or [])
    bad = [m for m in metrics if m not in KNOWN_METRICS]
    if bad:
        raise InvalidInput(f"{path}: metrics {bad} unknown; choose from {list(KNOWN_METRICS)}")
    if not isinstance(d["rows"], list) or not d["rows"]:
        raise InvalidInput(f"{path}: 'rows' must be a non-empty list")
    rows = []
    for i, r in enumerate(d["rows"]):
        if not isinstance(r, dict) or "name" not in r:
            raise InvalidInput(f"{path}: rows[{i}] needs a 'name'")
        extra = sorted(set(r) - {"name", "configs", "paper", "sampling"})
        if extra:
            raise InvalidInput(f"{path}: rows[{i}] ({r['name']}): unknown key(s) {extra}")
        paper = dict(r.get("paper") or {})
        badp = [k for k in paper if k not in KNOWN_METRICS]
        if badp:
            raise InvalidInput(f"{path}: rows[{i}].paper keys {badp} unknown; choose from {list(KNOWN_METRICS)}")
        rows.append(StudyRow(str(r["name"]), [resolve_path(c, path) for c in r.get("configs") or []], paper,
                             dict(r.get("sampling") or {})))
        check_sampling(path, f"rows[{i}].sampling", {**(d.get("sampling") or {}), **rows[-1].sampling})
    names = [r.name for r in rows]
    if len(set(map(slug, names))) != len(names):
        raise InvalidInput(f"{path}: row names must be distinct (after slugging): {names}")
    return Study(str(d.get("name") or path.stem), str(d.get("title") or path.stem), path,
                 [resolve_path(c, path) for c in d.get("base") or []], metrics, dict(d.get("sampling") or {}), rows)


def check_sampling(path: Path, key: str, sampling: dict) -> SamplerSettings:
    """The SamplerSettings of a spec's ``sampling`` mapping; a bad key or value names the file and key."""
    try:
        return SamplerSettings.from_dict(sampling)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"{path}: {key}: {e}") from None


def find_studies_for(config: Path, search: Path | None = None) -> list[tuple[Study, list[int]]]:
    """Specs under ``search`` (default experiments/studies beside the config's experiments/ folder)
    whose rows use ``config``, with the indices of those rows."""
    config = Path(config).resolve()
    if search is None:
        parents = [p for p in config.parents if p.name == "experiments"]
        search = (parents[0] if parents else config.parent) / "studies"
    found = []
    for spec in sorted(Path(search).glob("*.yaml")):
        try:
            st = load_study(spec)
        except (ValueError, FileNotFoundError):
            continue
        idx = [i for i, r in enumerate(st.rows) if any(c.resolve() == config for c in r.configs)]
        if idx:
            found.append((st, idx))
    return found


def study_for_path(path: str | os.PathLike) -> Study:
    """A study spec, or an ablation YAML: then the spec row(s) using it plus that spec's first row (the
    reference, e.g. the baseline), from the one spec under experiments/studies that lists it."""
    path = Path(path)
    d = _read_yaml(path)
    if "rows" in d:
        return load_study(path)
    found = find_studies_for(path)
    if not found:
        raise InvalidInput(f"{path} is a config, not a study spec, and no spec under experiments/studies/ lists "
                         f"it; write a spec (see experiments/studies/) or pass one")
    st, idx = found[0]
    keep = sorted({0, *idx})
    st.rows = [st.rows[i] for i in keep]
    return st


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    return s or "row"


# -- running ---------------------------------------------------------------------------------------------
def train_row(configs: list[Path], sets: list[str], out_dir: Path) -> Path:
    """Trains one row with LightningCLI (in process) and saves ``out_dir/final.ckpt`` (EMA inside)."""
    from enat_lightning.module import ENATModule
    from enat_lightning.quiet import quiet_known_warnings
    from enat_lightning.training_cli import ENATLightningCLI
    from enat_lightning.training_config import _override_arg, get, resolve_training_config

    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_training_config(configs, sets)
    args: list[str] = []
    for c in configs:
        args += ["-c", str(c)]
    args += ["--trainer.default_root_dir", str(out_dir)]
    if isinstance(get(resolved, "trainer.logger"), dict):  # keep each row's logs inside the study folder
        args += ["--trainer.logger.init_args.save_dir", str(out_dir / "logs")]
    args += [_override_arg(s) for s in sets]
    quiet_known_warnings()
    try:
        with warnings.catch_warnings():
            # the row's arguments go in as args= (sys.argv holds `enat study ...`): LightningCLI's
            # "args and sys.argv both given" warning does not apply (as in training_cli.run_lightning_cli)
            warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
            cli = ENATLightningCLI(ENATModule, datamodule_class=None, auto_configure_optimizers=False,
                                   save_config_kwargs={"overwrite": True}, run=False, args=args)
    except SystemExit as e:
        raise InvalidInput(f"LightningCLI rejected the composed config {[str(c) for c in configs]} + {list(sets)} "
                         f"(exit {e.code}); its message is printed above") from e
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = out_dir / "final.ckpt"
    with atomic_writer(ckpt) as tmp:
        cli.trainer.save_checkpoint(tmp, weights_only=False)  # the whole checkpoint, as ModelCheckpoint writes it
    write_checksum(ckpt)
    return ckpt


def sampling_for(study: Study, row: StudyRow, composed: dict, cfg) -> SamplerSettings:
    """Sampler settings of a row: SamplerSettings defaults < study ``sampling`` < row ``sampling``;
    unless given, reuse follows the row's training (a model trained with reuse_prob 0 is sampled
    without reuse, a NAT never reuses)."""
    s = {**study.sampling, **row.sampling}
    if "reuse" not in s:
        s["reuse"] = bool((_get(composed, "model.reuse_prob", 0.5) or 0) > 0) and cfg.supports_reuse
    return check_sampling(study.path, f"row {row.name!r} sampling", s)


def evaluate_row(ckpt: Path, composed: dict, metrics: list[str], sampling: SamplerSettings, *, sample_metric=None,
                 val_limit: int | None = None, device: str = "cpu", trust_checkpoint: bool = False) -> dict:
    """Our numbers for one trained row."""
    from enat_lightning.sampling.checkpoint import load_generator

    net, cfg = load_generator(ckpt, device=device, trust=trust_checkpoint)
    res: dict = {}
    val = _get(composed, "data.init_args.val_shards")
    if val:
        tokens, labels = load_tokens(str(val), val_limit)
        beta = tuple(_get(composed, "model.mask_ratio_beta", (12.0, 3.0)))
        res["masked_loss"] = masked_token_loss(net, tokens, labels, mask_ratio_beta=beta)["loss"]
    if "gflops" in metrics:
        from enat_lightning.evaluation.flops import count_generation

        # ablation-table convention: network only, conditional + unconditional passes, no VQ decoder
        res["gflops"] = count_generation(cfg, sampling, vq=None).gmacs_total
    if sample_metric is not None:
        res.update(sample_metric(net, sampling))
    return res


def run_study(study: Study, out_dir: str | os.PathLike, *, overrides: list[Path] = (), sets: list[str] = (),
              sample_metric=None, val_limit: int | None = None, retrain: bool = False,
              device: str = "cpu", trust_checkpoint: bool = False) -> list[dict]:
    """Trains (or reuses) and evaluates every row; writes results.csv / results.md; returns the rows.

    ``overrides``: YAMLs composed after every row (e.g. experiments/studies/demo_tiny.yaml);
    ``sets``: ``key=value`` overrides applied last; ``sample_metric(net, sampling) -> dict``.
    """
    from enat_lightning.training_config import model_config, resolve_training_config

    out = Path(out_dir)
    composed_rows = []
    for row in study.rows:
        configs = [*study.base, *row.configs, *map(Path, overrides)]
        for c in configs:
            if not c.is_file():
                raise MissingInput(f"study {study.path}, row {row.name!r}: config {c} does not exist")
        composed = resolve_training_config(configs, sets)  # exactly what `enat fit` trains for this row
        if hasattr(sample_metric, "check"):  # a tokenizer that cannot decode a row is refused before any training
            sample_metric.check(model_config(composed).codebook_size, f"row {row.name!r} (model.net.init_args)")
        composed_rows.append((row, configs, composed))
    results = []
    for row, configs, composed in composed_rows:
        row_dir = out / slug(row.name)
        ckpt = row_dir / "final.ckpt"
        if retrain or not ckpt.is_file():
            train_row(configs, list(sets), row_dir)
        from enat_lightning.sampling.checkpoint import generator_config, load_checkpoint_dict

        cfg = generator_config(load_checkpoint_dict(ckpt, trust=trust_checkpoint), ckpt)
        sampling = sampling_for(study, row, composed, cfg)
        ours = evaluate_row(ckpt, composed, study.metrics, sampling, sample_metric=sample_metric,
                            val_limit=val_limit, device=device, trust_checkpoint=trust_checkpoint)
        results.append(table_row(study, row, ours, ckpt))
        write_results(study, results, out)  # after every row: a long study shows progress
    return results


def table_row(study: Study, row: StudyRow, ours: dict, ckpt: Path) -> dict:
    r = {"row": row.name}
    for m in study.metrics:
        r[f"{m}_ours"] = ours.get(m, float("nan"))
        r[f"{m}_paper"] = float(row.paper[m]) if m in row.paper else float("nan")
    for m, v in ours.items():  # extra measurements (e.g. masked_loss, demo-FID when the paper has FID)
        if f"{m}_ours" not in r:
            r[f"{m}_ours"] = v
    r["checkpoint"] = str(ckpt)
    return r


def write_results(study: Study, rows: list[dict], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "md": out_dir / "results.md"}
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    full = [{c: r.get(c, float("nan")) for c in cols} for r in rows]
    write_csv(paths["csv"], full)
    pretty = []
    for r in full:
        p = {"row": r["row"]}
        for c in cols:
            if c.endswith("_ours") or c.endswith("_paper"):
                m, who = c.rsplit("_", 1)
                p[f"{METRIC_TITLES.get(m, m)} ({who})"] = r[c]
        pretty.append(p)
    text = (f"# {study.title}\n\nStudy spec: `{study.path}`. Paper numbers are ImageNet-256, 300k steps; "
            f"ours are whatever this run trained (tiny demo runs are not comparable in value, only in "
            f"direction).\n\n" + markdown_table(pretty, floatfmt="{:.3f}"))
    atomic_write_bytes(paths["md"], text.encode())
    return paths


# -- sample quality through the evaluation package -----------------------------------------------------
def sample_quality_metric(kind: str, settings: SamplerSettings | None = None, *, num_samples: int, seed: int = 0,
                          fid_stats: str | None = None, tokenizer: str | None = None, feature: str | None = None,
                          batch_size: int = 64, device: str = "cpu", metrics=("fid", "is", "accuracy"), **overrides):
    """A callable ``(model, sampling=None) -> dict`` scoring ``num_samples`` samples of a model.

    kind "demo-fid": demo tokenizer + demo classifier, against the demo train digits -> demo_fid,
    demo_is, accuracy. kind "fid": ``tokenizer`` (VQGAN path or JSON spec), Inception weights
    (``feature``, a .pth path) and reference ``fid_stats`` (.npz) -> fid, is. ``settings`` (keyword
    ``overrides`` replace fields) is the sampler; ``sampling`` given to the callable (a study row's
    SamplerSettings, or a mapping of fields to replace) takes its place; a model whose codebook_size is not the
    tokenizer's is refused before sampling (``metric.check(codebook_size, where)`` refuses it earlier, e.g.
    before a study trains). ``metrics``: the metric set logged per
    row (``evaluation.metrics.METRICS``, e.g. "fid,precision,recall"; precision / recall against the
    reference images: the demo digits, or ``arr_0`` of the ``fid_stats`` file).
    """
    import dataclasses

    from enat_lightning.evaluation import evaluate, load_feature_extractor
    from enat_lightning.evaluation.metrics import parse_metrics
    from enat_lightning.evaluation.reference_batch import load_reference_spec
    from enat_lightning.tokenizers import check_codebook_size

    metrics = parse_metrics(metrics)
    want_images = bool({"precision", "recall"} & set(metrics))
    from enat_lightning.sampling.iterative import resolve_settings

    base = resolve_settings(settings, overrides)

    if kind == "demo-fid":
        from enat_lightning.demo.data import dataset_for, ensure_demo_data, load_demo_tokenizer

        cache: dict = {}

        def demo_setup(model):
            """The demo data set the model fits (MNIST of `make demo`, or the sklearn digits of the tiny
            study rows in experiments/studies/demo_tiny.yaml): tokenizer, classifier, train-digit stats."""
            ds = dataset_for(model.cfg)
            if ds.name not in cache:
                ex = load_feature_extractor(f"demo:{ds.name}", device=device)
                ensure_demo_data(dataset=ds)
                cache[ds.name] = (load_demo_tokenizer(ds), ex,
                                  load_reference_spec(f"demo:{ds.name}:train", ex, images=want_images))
            return cache[ds.name]

        tok = extractor = ref = None
        prefix = "demo_"
    elif kind == "fid":
        from enat_lightning.tokenizers import load_tokenizer

        missing = [n for n, v in (("--fid-stats", fid_stats), ("--tokenizer", tokenizer),
                                  ("--inception", feature)) if not v]
        if missing:
            raise InvalidInput(f"--metric fid needs {', '.join(missing)} (reference stats from `enat fid-stats`, the "
                             f"VQGAN checkpoint, the Inception-v3 weights file)")
        tok = load_tokenizer(tokenizer)
        extractor = load_feature_extractor(feature, device=device)
        ref = load_reference_spec(fid_stats, extractor, images=want_images)
        prefix = ""
    else:
        raise InvalidInput(f"unknown sample metric {kind!r}: use 'demo-fid' or 'fid'")
    if hasattr(tok, "to"):
        tok = tok.to(device)
    setup = demo_setup if kind == "demo-fid" else (lambda model: (tok, extractor, ref))
    tok_name = "the demo tokenizer" if kind == "demo-fid" else f"--tokenizer {tokenizer}"

    def check(codebook_size: int, where: str = "the generator") -> None:
        """Refuses a generator whose codebook is not the tokenizer's (before any training or sampling);
        the demo tokenizer is chosen per model (``dataset_for``), so it is checked at call time only."""
        if tok is not None:
            check_codebook_size(tok, codebook_size, where, tok_name)

    def metric(model, sampling: SamplerSettings | dict | None = None) -> dict:
        if isinstance(sampling, SamplerSettings):
            settings = sampling
        else:
            settings = dataclasses.replace(base, **(sampling or {}))
        m_tok, m_extractor, m_ref = setup(model)
        check_codebook_size(m_tok, model.cfg.codebook_size, "the generator", tok_name)  # before decoding
        r = evaluate(model, m_tok, m_extractor, num_samples=num_samples, ref=m_ref, settings=settings, seed=seed,
                     batch_size=batch_size, metrics=metrics)
        out = {f"{prefix}{k}": r[k] for k in ("fid", "sfid") if k in r}
        if "is_mean" in r:
            out[f"{prefix}is"] = r["is_mean"]
        out.update({k: r[k] for k in ("precision", "recall", "accuracy") if k in r})
        return out

    metric.check = check  # callers that know the codebook before sampling refuse a mismatch early
    return metric
