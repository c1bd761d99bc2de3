"""Every command in README.md and docs/*.md is exercised: parsed by the real parser, the cheap ones run.

Collected: the lines of fenced ``bash`` / ``sh`` / ``shell`` / ``console`` (or untagged) blocks and the
command cells of Markdown tables. A line is split into its commands at ``|``, ``&&``, ``||`` and ``;``
(redirections dropped; backslash continuations joined; trailing ``# comments``, ``$ `` prompts, leading
``VAR=value`` assignments and ``[--optional]`` groups removed). Only commands that start with ``enat``,
``lightning``, ``make``, ``python`` or ``tensorboard`` are checked; anything else (``pip``, ``printf``,
``srun``, ...) is left alone, so any page may show such lines. In ``console`` blocks only the ``$ ``
lines are commands (the rest is their output).

Checks: ``enat`` commands parse with the real argument parser; training commands resolve their config with
``--print_config``; make targets, scripts and modules exist; repository paths named in a command exist;
the cheap commands run (``enat models``, ``enat study plan``, ``enat flops`` at 256 px; the ``flops``
lines outside the README only with the slow tests); a
``python - <<'EOF'`` block is executed (keep such blocks small and runnable on a fresh clone); the import
lines of ``python`` blocks must import. Read in README order, every command that reads a built asset (demo
shards, anything under runs/) comes after the command that builds it (``make demo``, ``enat tokenize demo``,
``enat fit``, ``--out``). The README
stays an index (<= 250 lines) that links every docs page, and relative links and their anchors resolve.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from enat_lightning import cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
PROGRAMS = ("enat", "lightning", "make", "python", "tensorboard")
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
# Pages other branches are writing; README.md and docs/README.md link them before they are merged.
PLANNED: set[str] = set()  # pages linked before they exist (none now)
# Repository folders whose paths in a command are inputs, so they must exist.
INPUT_DIRS = ("experiments/", "tests/", "benchmarks/", "enat_lightning/")
README_MAX_LINES = 250


@dataclass(frozen=True)
class Snippet:
    page: str
    text: str


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, content) of every fenced block."""
    blocks, current, lang = [], None, None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                lang, current = line.strip()[3:].strip().lower(), []
            else:
                blocks.append((lang, "\n".join(current) + "\n"))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _split_heredocs(block: str) -> tuple[str, list[str]]:
    """The block without heredoc bodies, and the bodies of ``python - <<'EOF'`` heredocs."""
    lines, out, bodies = block.splitlines(), [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        if m is None:
            out.append(line)
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == m.group(2)), len(lines))
        body = "\n".join(lines[i + 1:end]) + "\n"
        if re.match(r"\s*python3?\s+-(\s|$)", line):
            bodies.append(body)
        out.append(line[:m.start()])
        i = end + 1
    return "\n".join(out) + "\n", bodies


def _commands_of_line(line: str) -> list[list[str]]:
    """argv of each command on one shell line (split at control operators, redirections dropped)."""
    line = re.sub(r"^\s*\$\s+", "", line)
    line = re.sub(r"(^|\s)#\s.*$", "", line)                 # trailing comment
    line = re.sub(r"\s*\[-[^\]]*\]", "", line)               # [--optional] groups
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split, lex.commenters = True, ""
    try:
        tokens = list(lex)
    except ValueError:  # unbalanced quotes: not a command we can check
        return []
    commands, argv, skip = [], [], False
    for tok in tokens:
        if skip:
            skip = False
        elif tok in ("|", "||", "&&", ";", "&"):
            commands.append(argv)
            argv = []
        elif tok in (">", ">>", "<", ">&", "<&", "&>", ">|"):
            if argv and argv[-1].isdigit():
                argv.pop()  # the fd of "2>&1"
            skip = True
        else:
            argv.append(tok)
    commands.append(argv)
    result = []
    for argv in commands:
        while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
            argv = argv[1:]  # VAR=value prefix
        if argv and argv[0] in PROGRAMS:
            result.append(argv)
    return result


def _table_commands(text: str) -> list[list[str]]:
    """Command cells of Markdown tables: `enat ...` / `lightning ...` with a path or a flag."""
    rows = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("|"))
    found = []
    for cell in re.findall(r"`((?:enat|lightning) [^`]+)`", rows):
        if "..." in cell or "…" in cell:
            continue
        for argv in _commands_of_line(cell):
            if len(argv) > 3 or any(a.startswith("-") or "/" in a for a in argv[2:]):
                found.append(argv)
    return found


def block_commands(lang: str, block: str) -> tuple[list[list[str]], list[str]]:
    """argv of the commands of one fenced block, and the bodies of its python heredocs."""
    if lang not in SHELL_LANGS:
        return [], []
    block, bodies = _split_heredocs(block)
    found = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        if lang == "console" and not line.lstrip().startswith("$ "):
            continue  # console blocks: `$ command`, the other lines are its output
        found += _commands_of_line(line)
    return found, bodies


def collect() -> tuple[dict[str, tuple[list[str], str]], list[Snippet]]:
    commands: dict[str, tuple[list[str], str]] = {}
    heredocs: list[Snippet] = []
    for page in PAGES:
        name = str(page.relative_to(REPO))
        text = page.read_text()
        found = _table_commands(text)
        for lang, block in fenced_blocks(text):
            argvs, bodies = block_commands(lang, block)
            found += argvs
            heredocs += [Snippet(name, b) for b in bodies]
        for argv in found:
            commands.setdefault(shlex.join(argv), (argv, name))
    return dict(sorted(commands.items())), heredocs


COMMANDS, HEREDOCS = collect()


def _select(pred) -> list:
    return [pytest.param(argv, page, id=cmd) for cmd, (argv, page) in COMMANDS.items() if pred(argv)]


# --- the pages -----------------------------------------------------------------------------------

def test_readme_starts_with_the_two_commands():
    head = README.read_text().split("```", 2)[1]
    assert "make demo" in head and "make test" in head


def test_readme_is_an_index():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move manual text to docs/"


def test_every_docs_page_is_linked_from_both_indexes():
    readme, index = README.read_text(), (DOCS / "README.md").read_text()
    for page in sorted(DOCS.rglob("*.md")):
        rel = page.relative_to(DOCS).as_posix()
        if rel == "README.md":
            assert "(docs/README.md)" in readme
            continue
        assert f"(docs/{rel})" in readme, f"README.md does not link docs/{rel}"
        assert f"({rel})" in index, f"docs/README.md does not link {rel}"


def test_pages_have_commands():
    assert len(COMMANDS) > 60
    pages = {page for _, page in COMMANDS.values()}
    assert {"README.md", "docs/training.md", "docs/sampling_evaluation.md", "docs/data.md",
            "docs/analyses.md"} <= pages


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    for _, block in fenced_blocks(text):
        text = text.replace(block, "")
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    text = page.read_text()
    for _, block in fenced_blocks(text):
        text = text.replace(block, "")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            assert dest.parent == DOCS.resolve() and dest.name in PLANNED, \
                f"{page.relative_to(REPO)}: link to {target!r}: no such file"
            continue
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.relative_to(REPO)}: link to {target!r}: no such heading"


# --- the commands --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,page", _select(lambda a: a[0] == "make"))
def test_make_targets_exist(argv, page):
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    target = next((a for a in argv[1:] if not a.startswith("-") and "=" not in a), None)
    assert target in targets, f"{page}: {shlex.join(argv)!r}: no such make target"


@pytest.mark.parametrize("argv,page", _select(lambda a: a[0] in ("python", "tensorboard")))
def test_scripts_and_modules_exist(argv, page):
    if argv[0] == "tensorboard":
        assert importlib.util.find_spec("tensorboard") is not None
        return
    if argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, f"{page}: {shlex.join(argv)!r}: no module {argv[2]}"
    elif argv[1] not in ("-c", "-"):  # heredocs are run by test_heredocs_run
        assert (REPO / argv[1]).is_file(), f"{page}: {shlex.join(argv)!r}: no script {argv[1]}"


@pytest.mark.parametrize("argv,page", _select(lambda a: any(x.startswith(INPUT_DIRS) for x in a)))
def test_repository_paths_exist(argv, page):
    for arg in argv:
        for value in arg.split("=")[-1:]:
            if value.startswith(INPUT_DIRS) and not any(c in value for c in "{*"):
                assert (REPO / value).exists(), f"{page}: {shlex.join(argv)!r}: no {value} in the repository"


def _is_training(argv: list[str]) -> bool:
    return argv[0] in ("enat", "lightning") and len(argv) > 1 and argv[1] in cli.LIGHTNING_SUBCOMMANDS


@pytest.mark.parametrize("argv,page", _select(lambda a: a[0] == "enat" and not _is_training(a)))
def test_enat_commands_parse(argv, page):
    from enat_lightning.errors import UserError

    try:  # the command's own jsonargparse parser; nothing runs
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            fn, kwargs = cli.parse(argv[1:])
    except SystemExit as e:  # --print_config / --help print and exit 0
        assert e.code in (0, None), f"{page}: {shlex.join(argv)!r} exits {e.code}: {err.getvalue().strip()}"
        return
    except UserError as e:
        pytest.fail(f"{page}: {shlex.join(argv)!r} does not parse: {e}")
    assert callable(fn) and isinstance(kwargs, dict), f"{page}: {shlex.join(argv)!r} names no command"


@pytest.mark.parametrize("argv,page", _select(_is_training))
def test_training_commands_resolve_their_config(argv, page, monkeypatch, capsys):
    from enat_lightning.training_cli import run_lightning_cli

    monkeypatch.chdir(REPO)
    args = [a for a in argv[1:] if a != "--print_config"]
    if "--ckpt_path" in args:  # resuming needs a run; the config must still resolve
        i = args.index("--ckpt_path")
        del args[i:i + 2]
    assert run_lightning_cli([*args, "--print_config"]) == 0, f"{page}: {shlex.join(argv)!r} fails to resolve"
    assert "model:" in capsys.readouterr().out


def _is_cheap(argv: list[str]) -> bool:
    if argv[0] != "enat" or len(argv) < 2:
        return False
    if argv[1] == "models" or argv[1:3] == ["study", "plan"]:
        return True
    return argv[1] == "flops" and "--ckpt" not in argv and "--resolution" not in argv


# `enat flops` takes seconds per call: the README's (the paper-map rows) run in `make test`, the
# others in `make test-all` (their flags are still parsed by test_enat_commands_parse).
CHEAP = [pytest.param(*p.values, id=p.id, marks=[pytest.mark.slow] if p.values[0][1] == "flops"
                      and p.values[1] != "README.md" else [])
         for p in _select(_is_cheap)]


def test_cheap_commands_are_found():
    names = {" ".join(p.values[0][:3]) for p in CHEAP}
    assert {"enat models", "enat flops -c", "enat study plan"} <= names


@pytest.mark.parametrize("argv,page", CHEAP)
def test_cheap_commands_run(argv, page, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli.main(argv[1:]) == 0, f"{page}: {shlex.join(argv)!r} failed"
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("snippet", HEREDOCS, ids=lambda s: s.page)
def test_heredocs_run(snippet, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    exec(compile(snippet.text, f"<python heredoc in {snippet.page}>", "exec"), {"__name__": "__main__"})
    capsys.readouterr()


def _python_imports() -> list:
    """The import statements of the ``python`` blocks (the rest uses placeholders and files users have)."""
    found = []
    for page in PAGES:
        for lang, block in fenced_blocks(page.read_text()):
            if lang in ("python", "py"):
                lines = [line.strip() for line in block.splitlines()
                         if re.match(r"^(import|from)\s+\S+(\s+import\s+[^(]+)?$", line.strip())]
                if lines:
                    found.append(pytest.param(page.relative_to(REPO).as_posix(), "\n".join(lines),
                                              id=f"{page.relative_to(REPO)}:{lines[0]}"))
    return found


@pytest.mark.parametrize("page,imports", _python_imports())
def test_python_examples_import(page, imports):
    try:
        exec(compile(imports, f"<python block in {page}>", "exec"), {})
    except ImportError as e:
        pytest.fail(f"{page}: a Python example imports what the package does not have: {e}")


def test_collector_splits_and_filters():
    """The collector itself: prompts, env prefixes, pipes, redirections, comments, optional groups."""
    got = _commands_of_line("$ ENAT_DEBUG=1 enat models --json 2>&1 | head -3 && make test  # note")
    assert got == [["enat", "models", "--json"], ["make", "test"]]
    assert _commands_of_line("pip install -e '.[eval]'; printf 'a\\n' > x.txt") == []
    assert _commands_of_line("enat sample --ckpt a.ckpt [--save-images] --out o") == \
        [["enat", "sample", "--ckpt", "a.ckpt", "--out", "o"]]
    argvs, bodies = block_commands("bash", "python - <<'EOF'\nimport os\nEOF\nenat models \\\n  --json\n")
    assert bodies == ["import os\n"] and argvs == [["python", "-"], ["enat", "models", "--json"]]
    argvs, _ = block_commands("console", "$ enat models\npython 3.11 output line\n")
    assert argvs == [["enat", "models"]]
    assert block_commands("python", "import os\n") == ([], [])


def test_a_missing_demo_asset_names_its_exact_command_and_the_readme_runs_it_first(tmp_path):
    """After `make demo` (MNIST only) the README's tiny study needs the digits shards: the error for a missing
    digits manifest names `enat tokenize demo --dataset digits`, and the README gives that command before
    the study command (README order)."""
    import enat_lightning.demo.data  # noqa: F401  registers the demo data sets' commands (as the commands do)
    from enat_lightning.data.reader import resolve_manifest
    from enat_lightning.errors import MissingInput

    for name, folder in (("digits", "digits"), ("mnist", "demo")):
        with pytest.raises(MissingInput, match=rf"build these shards with `enat tokenize demo --dataset {name}`"):
            resolve_manifest(str(REPO / "data" / folder / "shards" / "no-such-split" / "x.tar"))
    with pytest.raises(MissingInput, match="enat tokenize imagefolder"):  # not a demo path: the generic advice
        resolve_manifest(str(tmp_path / "shards"))
    readme = README.read_text()
    study = readme.index("enat study run experiments/studies/fig2_attention_removal.yaml --override")
    assert readme.index("enat tokenize demo --dataset digits") < study


SPEED_VS_OFFICIAL = re.compile(r"(faster|speed(-?up)?|slower)[^.\n|]{0,80}official[^.\n|]{0,60}\d(\.\d+)?\s?×"
                               r"|official[^.\n|]{0,80}(faster|speed(-?up)?)[^.\n|]{0,40}\d(\.\d+)?\s?×"
                               r"|\d(\.\d+)?\s?×[^.\n|]{0,40}(faster|speed(-?up)?)[^.\n|]{0,40}official", re.I)


RATIO = re.compile(r"\d(\.\d+)?\s?×")
REPO_PATH = re.compile(r"`((?:enat_lightning|tests|benchmarks|experiments|docs|\.ci)/[^`\s]*)`")


def _speed_lines_in_official_sections(text: str) -> list[str]:
    """Lines with a speed word and a ratio (1.25×) in a section (between headings) that compares with the official
    code: a table of ours against the official call pattern says it through its rows, not in one sentence."""
    found = []
    for section in re.split(r"(?m)^#{1,6}\s", text):
        if "official" in section.lower():
            found += [line.strip() for line in section.splitlines()
                      if re.search(r"speed|faster|slower", line, re.I) and RATIO.search(line)]
    return found


def _package_listings(text: str):
    """(folder, files named) of "`enat_lightning/pkg/` (`a.py` does X, `b.py` ...)" listings."""
    for m in re.finditer(r"`((?:enat_lightning|tests|benchmarks|experiments)(?:/[\w.-]+)*)/`\s*\(", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield m.group(1), re.findall(r"`([\w-]+\.(?:py|yaml))`", text[m.end():i - 1])


def _exists(ref: str) -> bool:
    """A repository path, or ``tests/x.py::test_name`` (the file defines that test)."""
    path, _, test = ref.partition("::")
    if not (REPO / path).exists():
        return False
    return not test or re.search(rf"^\s*def {re.escape(test)}\(", (REPO / path).read_text(), re.M) is not None


def _missing_files(text: str) -> list[str]:
    """Repository paths in backticks (``file::test`` references too), and files of package listings, that do
    not exist."""
    missing = [v for v in (m.group(1).rstrip("/") for m in REPO_PATH.finditer(text))
               if "..." not in v and not any(c in v for c in "{*<>[]") and not _exists(v)]
    for folder, names in _package_listings(text):
        missing += [f"{folder}/{n}" for n in names if not (REPO / folder / n).exists()]
    return missing


def test_no_stale_cross_references_and_one_page_per_measured_figure():
    """A page never announces an existing page as "planned"; the files it names exist; the speed against the
    official code is stated on performance.md only (other pages link it)."""
    problems = []
    for page in PAGES:
        text = page.read_text()
        problems += [f"{page.name}: names {f}, which does not exist" for f in _missing_files(text)]
        for m in re.finditer(r"planned pages?\b[^.]*", text, re.I):
            linked = re.findall(r"\]\(([\w./-]+\.md)", m.group(0))
            problems += [f"{page.name}: announces existing page {t} as planned" for t in linked
                         if (page.parent / t).exists()]
        if page.name != "performance.md":
            problems += [f"{page.name}: speed figure vs the official code outside performance.md: {m.group(0)!r}"
                         for m in SPEED_VS_OFFICIAL.finditer(text)]
            problems += [f"{page.name}: speed figure in a section on the official code outside performance.md: {line!r}"
                         for line in _speed_lines_in_official_sections(text)]
    assert not problems, "\n".join(problems)


def test_the_stale_reference_check_can_fail():
    assert SPEED_VS_OFFICIAL.search("`generate` is 1.1–1.25× faster than the official call pattern")
    assert SPEED_VS_OFFICIAL.search("speed against the official code (2-core CPU: sampling 1.6×)")
    assert not SPEED_VS_OFFICIAL.search("the speed against the official code: [performance.md](performance.md)")
    table = ("### Sampling speed\n\n| | s/image |\n|---|---|\n| official call pattern | 2.25 |\n| `generate` | 1.79 |\n"
             "| speedup | 1.25× wall |\n")
    assert _speed_lines_in_official_sections(table) == ["| speedup | 1.25× wall |"]
    assert _speed_lines_in_official_sections(table.replace("official call pattern", "baseline")) == []
    listing = "Code: `enat_lightning/analysis/` (`similarity.py` Fig. 5, `model_source.py` loading the model)."
    assert _missing_files(listing) == ["enat_lightning/analysis/model_source.py"]
    assert _missing_files("see `enat_lightning/analysis/attention.py` and `tests/...`") == \
        ["enat_lightning/analysis/attention.py"]
    assert _missing_files("`tests/test_import_layers.py::test_no_import_cycles`, "
                          "`tests/test_import_layers.py::test_renamed_away`") == [
        "tests/test_import_layers.py::test_renamed_away"]


# --- the README in order, as on a fresh clone ----------------------------------------------------
# A command that reads a built asset -- demo shards under data/demo or data/digits, anything under runs/ -- must
# come after the command that builds it: `make demo` (its outputs: the MNIST demo data and runs/demo), `enat
# tokenize demo --dataset X`, `enat fit` (its log folder), any `--out DIR`. Assets the user brings (ImageNet
# shards, official weights, NAT.ckpt) are named in the README's "needs" column and are not checked here.

def readme_commands_in_order(text: str) -> list[list[str]]:
    """argv of every README command in reading order: fenced blocks and table cells as they come."""
    found, block, lang = [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if block is None:
                lang, block = line.strip()[3:].strip().lower(), []
            else:
                found += block_commands(lang, "\n".join(block) + "\n")[0]
                block = None
        elif block is not None:
            block.append(line)
        elif line.lstrip().startswith("|"):
            found += _table_commands(line)
    return found


def _demo_roots() -> dict[str, str]:
    """Demo data set name -> its folder relative to the repository (data/demo, data/digits)."""
    from enat_lightning.demo.data import DATASETS, demo_paths

    return {name: demo_paths(None, ds).root.resolve().relative_to(REPO).as_posix() for name, ds in DATASETS.items()}


def _make_demo_outputs() -> set[str]:
    """What `make demo` (enat_lightning.demo -> `enat demo`, run_demo) documents that it builds: the data set
    ensure_demo_data builds by default and run_demo's run folder."""
    import inspect

    from enat_lightning.demo.data import ensure_demo_data
    from enat_lightning.demo.pipeline import run_demo

    dataset = inspect.signature(ensure_demo_data).parameters["dataset"].default
    run_dir = inspect.signature(run_demo).parameters["run_dir"].default
    return {_demo_roots()[getattr(dataset, "name", dataset)], Path(run_dir).as_posix()}


def _rel(value) -> str | None:
    """A repository-relative path of a built asset (under a demo data folder or runs/), else None."""
    if value is None or not isinstance(value, (str, Path)):
        return None
    p = Path(str(value))
    if p.is_absolute():
        return None
    s = p.as_posix().removeprefix("./").rstrip("/")
    built = ("runs", *_demo_roots().values())
    return s if any(s == b or s.startswith(b + "/") for b in built) else None


def _config_assets(configs: list, sets: list[str] = ()) -> tuple[set[str], set[str]]:
    """(read, written) by `enat fit` on these composed configs: its data shards; its log / checkpoint folder."""
    from enat_lightning.training_config import resolve_training_config

    composed = resolve_training_config([REPO / c for c in configs], list(sets))
    data = (composed.get("data") or {}).get("init_args") or {}
    trainer = composed.get("trainer") or {}
    logger = trainer.get("logger")
    logger = logger[0] if isinstance(logger, list) and logger else logger
    args = logger.get("init_args", {}) if isinstance(logger, dict) else {}
    written = {Path(args["save_dir"], args.get("name") or "").as_posix()} if args.get("save_dir") else set()
    if trainer.get("default_root_dir"):
        written.add(Path(trainer["default_root_dir"]).as_posix())
    read = {r for r in (_rel(data.get(k)) for k in ("train_shards", "val_shards")) if r}
    return read, {r for r in map(_rel, written) if r}


def command_assets(argv: list[str]) -> tuple[set[str], set[str]]:
    """(built assets the command reads, built assets it writes) for one README command."""
    return _command_assets(tuple(argv))


@functools.lru_cache(maxsize=None)  # configs resolve once per session (seconds in all)
def _command_assets(argv: tuple[str, ...]) -> tuple[frozenset, frozenset]:
    argv = list(argv)
    if argv[:2] == ["make", "demo"]:
        return frozenset(), frozenset(_make_demo_outputs())
    if argv[0] == "tensorboard":
        i = argv.index("--logdir") if "--logdir" in argv else -1
        return frozenset({_rel(argv[i + 1])} - {None} if i >= 0 else ()), frozenset()
    if argv[0] != "enat" or len(argv) < 2:
        return frozenset(), frozenset()
    if _is_training(argv):
        configs = [argv[i + 1] for i, a in enumerate(argv) if a in ("-c", "--config")]
        read, written = _config_assets(configs) if configs else (set(), set())
        if "--ckpt_path" in argv:
            read |= {_rel(argv[argv.index("--ckpt_path") + 1])} - {None}
        return frozenset(read), frozenset(written)
    _, kwargs = cli.parse(argv[1:])
    read = {_rel(v) for k, v in kwargs.items() if k != "out"} - {None}
    written = {_rel(kwargs.get("out"))} - {None}
    if argv[1:3] == ["tokenize", "demo"] and kwargs.get("out") is None:
        written.add(_demo_roots()[kwargs["dataset"]])
    if argv[1:3] == ["study", "run"]:
        from enat_lightning.studies.study import load_study

        study = load_study(REPO / kwargs["spec"])
        for row in study.rows:
            r, _ = _config_assets([*study.base, *row.configs, *(kwargs.get("override") or [])], kwargs.get("set") or [])
            read |= r
    return frozenset(read), frozenset(written)


def readme_order_problems(text: str) -> list[str]:
    """Each README command that reads a built asset no earlier README command builds."""
    built: set[str] = set()
    problems = []
    for argv in readme_commands_in_order(text):
        read, written = command_assets(argv)
        for asset in sorted(read):
            if not any(asset == b or asset.startswith(b + "/") for b in built):
                problems.append(f"`{shlex.join(argv)}` reads {asset}, which no earlier README command builds")
        built |= written
    return problems


def test_readme_commands_in_order_on_a_fresh_clone(monkeypatch):
    """Run in README order on a fresh clone, every command finds the assets it reads: `make demo` before
    TensorBoard on runs/demo, `enat tokenize demo --dataset digits` before the tiny study on data/digits,
    `enat fit` before the `enat evaluate` of its checkpoint (the cheap ones also run: test_cheap_commands_run)."""
    monkeypatch.chdir(REPO)
    text = README.read_text()
    assert readme_order_problems(text) == []
    reads = [command_assets(a)[0] for a in readme_commands_in_order(text)]
    assert any("data/digits/shards/train" in r for r in reads) and any("runs/demo" in r for r in reads)


def test_readme_order_check_fails_on_a_reordered_or_missing_producer(monkeypatch):
    monkeypatch.chdir(REPO)
    text = README.read_text()
    tokenize = next(line for line in text.splitlines() if line.startswith("enat tokenize demo --dataset digits"))
    study = "enat study run experiments/studies/fig2_attention_removal.yaml --override"
    problems = readme_order_problems(text.replace(tokenize + "\n", ""))  # the producing command removed
    assert [p.split("` reads ")[1].split(",")[0] for p in problems] == ["data/digits/shards/train",
                                                                         "data/digits/shards/val"]
    assert all(p.startswith(f"`{study}") for p in problems)
    start = text.index(study)  # the study moved above the command that builds its data
    block_end = text.index("```", start)
    reordered = text.replace(tokenize + "\n", "").replace(text[start:block_end], text[start:block_end] + tokenize + "\n")
    assert reordered != text and readme_order_problems(reordered) == problems
    no_demo = text.replace("make demo   #", "make test   #", 1)  # without `make demo`, runs/demo is never built
    assert any(p.startswith("`tensorboard --logdir runs/demo`") for p in readme_order_problems(no_demo))
    fit = "`enat fit -c experiments/enat_l.yaml -c experiments/strategy/ddp.yaml`, then "
    assert any("runs/enat_l/checkpoints/last.ckpt" in p for p in readme_order_problems(text.replace(fit, "")))


def _fresh_clone(dst: Path) -> Path:
    """The tracked files of this checkout (what `git clone` gives, without the builds, data and runs here)."""
    import shutil
    import subprocess

    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no fresh clone to make")
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if src.is_file() and not name.startswith("tests/fixtures/"):
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


@pytest.mark.slow
def test_readme_cheap_commands_run_in_order_on_a_fresh_clone(tmp_path):
    """On a fresh clone, in README order: the cheap commands run for real (`enat flops` of the paper map, and `enat
    tokenize demo --dataset digits`, which builds the data of the tiny study right below it); the rest is parsed
    and ordered by the tests above."""
    import os
    import subprocess
    import sys

    clone = _fresh_clone(tmp_path / "clone")
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    ran = []
    for argv in readme_commands_in_order(README.read_text()):
        if _is_cheap(argv) or argv[1:3] == ["tokenize", "demo"]:
            res = subprocess.run([sys.executable, "-m", "enat_lightning.cli", *argv[1:]], cwd=clone, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, f"`{shlex.join(argv)}` on a fresh clone: {res.stderr[-2000:]}"
            ran.append(shlex.join(argv[:3]))
    assert "enat tokenize demo" in ran and any(r.startswith("enat flops") for r in ran), ran
    assert (clone / "data" / "digits" / "shards" / "train" / "manifest.json").is_file()  # the study's data
