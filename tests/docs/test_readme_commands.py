"""Every command in README.md is exercised: parsed by the real parser, and the cheap ones run.

A command line in a fenced block that starts with `enat`, `lightning`, `make`, `python` or
`tensorboard` is collected (backslash continuations joined, trailing comments and `[optional]`
groups dropped). `enat` commands must parse with the real argument parser; training commands must
resolve their config with `--print_config`; make targets must exist; scripts and modules must exist.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from enat_lightning import cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PREFIXES = ("enat ", "lightning ", "make ", "python ", "tensorboard ")


def shell_blocks(text: str) -> list[str]:
    """Contents of the fenced blocks tagged bash/sh/console or untagged."""
    blocks, current, lang = [], None, None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                lang, current = line.strip()[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line.startswith(PREFIXES):
                continue
            line = re.sub(r"\s+#\s.*$", "", line)          # trailing comment
            line = re.sub(r"\s*\[-[^\]]*\]", "", line)      # [--optional] groups
            commands.append(line.strip())
    # inline commands of the "Reproduce the paper" table
    table_rows = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    for cell in re.findall(r"`((?:enat|lightning) [^`]+)`", table_rows):
        if "..." not in cell and "…" not in cell and len(cell.split()) > 2:
            commands.append(re.sub(r"\s*\[-[^\]]*\]", "", cell).strip())
    return sorted(set(commands))


COMMANDS = readme_commands()


def test_readme_starts_with_the_two_commands():
    head = README.read_text().split("```", 2)[1]
    assert "make demo" in head and "make test" in head


def test_readme_has_commands():
    assert len(COMMANDS) > 30


def _argv(cmd: str) -> list[str]:
    return shlex.split(cmd.replace("|", " "), posix=True)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(cmd):
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    assert _argv(cmd)[1] in targets, f"README command {cmd!r}: no such make target"


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.startswith(("python ", "tensorboard "))])
def test_scripts_and_modules_exist(cmd):
    argv = _argv(cmd)
    if argv[0] == "tensorboard":
        assert importlib.util.find_spec("tensorboard") is not None
        return
    if argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, f"README command {cmd!r}: no module {argv[2]}"
    elif argv[1] not in ("-c", "-"):  # inline code is exercised by the tests of its section
        assert (REPO / argv[1]).is_file(), f"README command {cmd!r}: no script {argv[1]}"


ENAT_COMMANDS = [c for c in COMMANDS if c.startswith("enat ") and c.split()[1] not in cli.LIGHTNING_SUBCOMMANDS]
TRAIN_COMMANDS = [c for c in COMMANDS if c.split()[0] in ("enat", "lightning") and c.split()[1] in cli.LIGHTNING_SUBCOMMANDS]


@pytest.mark.parametrize("cmd", ENAT_COMMANDS)
def test_enat_commands_parse(cmd):
    parser = cli.build_parser()
    try:
        args = parser.parse_args(_argv(cmd)[1:])
    except SystemExit as e:
        pytest.fail(f"README command {cmd!r} does not parse (exit {e.code})")
    assert getattr(args, "run", None) is not None


@pytest.mark.parametrize("cmd", TRAIN_COMMANDS)
def test_training_commands_resolve_their_config(cmd, monkeypatch, capsys):
    from enat_lightning.training_cli import run_lightning_cli

    monkeypatch.chdir(REPO)
    argv = [a for a in _argv(cmd)[1:] if a != "--print_config"]
    if "--ckpt_path" in argv:  # resuming needs a run; the config must still resolve
        i = argv.index("--ckpt_path")
        del argv[i:i + 2]
    assert run_lightning_cli([*argv, "--print_config"]) == 0, f"README command {cmd!r} fails to resolve"
    assert "model:" in capsys.readouterr().out


CHEAP = ["enat models", "enat flops -c experiments/enat_s.yaml --steps 8", "enat flops -c experiments/enat_l.yaml --steps 8"]


@pytest.mark.parametrize("cmd", CHEAP)
def test_cheap_commands_run(cmd, monkeypatch, capsys):
    assert cmd in COMMANDS, f"{cmd!r} is no longer in the README"
    monkeypatch.chdir(REPO)
    assert cli.main(_argv(cmd)[1:]) == 0
    assert capsys.readouterr().out.strip()
