"""The console scripts: `enat`, `lightning`, and the one-line error contract."""
import json
import subprocess
import sys

from enat_lightning import cli


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


def test_user_errors_are_one_line_without_traceback():
    def boom(_args):
        raise ValueError("config key 'model.width': expected int, got 'x'")
    assert cli._guarded(boom, None) == 2
    res = subprocess.run([sys.executable, "-m", "enat_lightning.cli", "models", "--resolution", "x"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
