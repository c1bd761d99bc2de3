"""The console scripts: `enat`, `lightning`, and the one-line error contract."""
import inspect
import json
import subprocess
import sys

import pytest
import yaml

from enat_lightning import cli
from enat_lightning.commands import parsing


def test_enat_help_lists_commands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "models" in out and "fit" in out


def test_enat_models_json(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert round(rows["enat-s"]["params_paper_m"], 2) == 50.38
    assert set(rows) >= {"nat-baseline", "enat-s", "enat-b", "enat-l", "disentangled-12-4"}


def test_console_scripts_are_installed():
    out = subprocess.run(["enat", "models"], capture_output=True, text=True, check=True).stdout
    assert "enat-l" in out
    res = subprocess.run(["lightning"], capture_output=True, text=True)
    assert res.returncode == 2 and "lightning {fit" in res.stderr


def test_user_errors_are_one_line_without_traceback(capsys):
    from enat_lightning.errors import InvalidInput, MissingInput

    for err in (InvalidInput("config key 'model.width': expected int, got 'x'"), MissingInput("no file x.ckpt")):
        def boom(_args, err=err):
            raise err
        assert cli._guarded(boom, None) == 2
        assert capsys.readouterr().err.startswith("enat: error: ")
    res = subprocess.run([sys.executable, "-m", "enat_lightning.cli", "models", "--resolution", "x"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr


@pytest.mark.parametrize("exc", [KeyError("sampler"), ValueError("shapes (2, 3) and (3, 2)"), TypeError("x")])
def test_a_bug_inside_a_command_shows_its_traceback(monkeypatch, exc):
    """Only UserError is the user's mistake; a KeyError / ValueError raised in our code is a bug: it propagates
    (the interpreter prints the traceback and exits 1), never one line with exit code 2."""
    from enat_lightning.commands import models as models_cmd

    def broken(**kwargs):
        raise exc
    monkeypatch.setattr(models_cmd, "models", broken)
    with pytest.raises(type(exc)):
        cli.main(["models"])
    res = subprocess.run([sys.executable, "-c", "import sys; from enat_lightning import cli; "
                          "import enat_lightning.commands.models as m; "
                          "m.models = lambda **kw: {}['missing key']; sys.exit(cli.main(['models']))"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" in res.stderr and "KeyError: 'missing key'" in res.stderr, res.stderr


def _leaves():
    for name, target in cli.COMMANDS.items():
        if isinstance(target, str):
            yield [name]
        else:
            yield from ([name, sub] for sub in target)


@pytest.mark.parametrize("cmd", list(_leaves()), ids=" ".join)
def test_every_command_prints_its_config_and_reads_it_back(cmd, tmp_path, capsys):
    """`--print_config` prints the command's options as YAML; `-c` that file gives the same arguments."""
    assert cli.main([*cmd, "--print_config"]) == 0
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and data
    fn = cli.command_function(cli.COMMANDS[cmd[0]] if len(cmd) == 1 else cli.COMMANDS[cmd[0]][cmd[1]])
    required = {k: "x" for k, p in inspect.signature(fn).parameters.items() if p.default is inspect.Parameter.empty}
    data.update({k: v for k, v in required.items() if data.get(k) is None})
    (tmp_path / "opts.yaml").write_text(yaml.safe_dump(data))
    positional = list(required.values()) if getattr(fn, "positional", False) else []
    got_fn, kwargs = cli.parse([*cmd, "-c", str(tmp_path / "opts.yaml"), *positional])
    assert got_fn is fn and set(kwargs) == set(inspect.signature(fn).parameters)


def test_sampler_options_come_from_sampler_settings():
    """One definition: every command with sampler options takes the SamplerSettings group, and its flags are
    exactly the dataclass fields (with the dataclass defaults)."""
    import dataclasses

    from enat_lightning.sampling.settings import SamplerSettings

    fields = {f.name: f.default for f in dataclasses.fields(SamplerSettings)}
    with_sampler = 0
    for cmd in _leaves():
        fn = cli.command_function(cli.COMMANDS[cmd[0]] if len(cmd) == 1 else cli.COMMANDS[cmd[0]][cmd[1]])
        params = inspect.signature(fn).parameters
        assert not set(params) & (set(fields) - {"seed"}), f"{cmd} re-declares sampler options"
        if "sampler" not in params:
            continue
        with_sampler += 1
        assert params["sampler"].annotation in (SamplerSettings, "SamplerSettings")
        opts = parsing._options(cli.command_parser(fn, "enat"))
        assert {o[len("--sampler."):] for o in opts if o.startswith("--sampler.")} == set(fields)
    assert with_sampler >= 6  # sample, evaluate, flops, analyze x3


def test_command_line_conveniences(tmp_path):
    fn, kw = cli.parse(["sample", "--out", "o", "--ckpt", "c.ckpt", "--labels", "1,2,3", "--per-class", "2",
                        "--steps", "4", "--cfg", "1.5", "--no-reuse", "--save-images", "--no-progress"])
    assert kw["labels"] == [1, 2, 3] and kw["per_class"] == 2 and kw["save_images"] is True and kw["progress"] is False
    assert (kw["sampler"].steps, kw["sampler"].cfg_scale, kw["sampler"].reuse) == (4, 1.5, False)
    _, kw = cli.parse(["study", "run", "spec.yaml", "--set", "a=1", "--set", "b=2", "--rows", "x"])
    assert kw["set"] == ["a=1", "b=2"] and kw["rows"] == ["x"] and str(kw["spec"]) == "spec.yaml"
    _, kw = cli.parse(["flops", "-c", "experiments/enat_s.yaml", "-c", "experiments/ablations/table2_12_4.yaml"])
    assert [str(p) for p in kw["experiment"]] == ["experiments/enat_s.yaml", "experiments/ablations/table2_12_4.yaml"]
    _, kw = cli.parse(["demo", "--eval-samples", "5", "--", "--trainer.max_steps=3"])
    assert kw["eval_samples"] == 5 and kw["lightning_args"] == ["--trainer.max_steps=3"]


def test_parse_errors_are_one_line(capsys):
    assert cli.main(["sample", "--out", "o", "--labels", "1,x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels [1, 'x']: not a valid" in err
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert cli.main(["analyze", "nope"]) == 2 and "choose one of similarity" in capsys.readouterr().err


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("ENAT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(["flops", "--ckpt", "surely_missing.ckpt"])


def test_commands_in_docs_commands_md_parse(capsys):
    """docs/commands.md shows real command lines: each parses with its command's parser."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("enat ")]
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line)[1:]
        if "--print_config" in argv:
            with pytest.raises(SystemExit) as e:
                cli.parse(argv)
            assert e.value.code in (0, None)
            assert yaml.safe_load(capsys.readouterr().out)
        else:
            fn, kwargs = cli.parse(argv)
            assert callable(fn) and kwargs
