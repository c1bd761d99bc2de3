"""Reading the YAML config files a user names with ``-c``: the one place that says an empty file, a
file that is not a mapping, or invalid YAML is one line naming the file. Standard library + PyYAML only,
so every layer (the command parser, LightningCLI's entry point, the config resolver) can use it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from enat_lightning.errors import MissingInput, UserError


def config_files(argv: Iterable[str]) -> list[str]:
    """The files given with ``-c FILE`` / ``--config FILE`` / ``--config=FILE`` in a command line."""
    argv, out = list(argv), []
    for i, tok in enumerate(argv):
        if tok in ("-c", "--config") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif tok.startswith("--config="):
            out.append(tok.split("=", 1)[1])
    return out


def read_config_file(path: str | os.PathLike):
    """A YAML config file as a mapping; an empty file or one that is not a mapping is one line naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"config file {path} does not exist (the training configs are in experiments/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from e
    if data is None:
        raise UserError(f"config file {path} is empty: it must be a YAML mapping such as `model: ...`")
    if not isinstance(data, dict):
        raise UserError(f"config file {path} holds a {type(data).__name__}, not a mapping of keys "
                        f"(`trainer: ...`, `model: ...`)")
    return data
