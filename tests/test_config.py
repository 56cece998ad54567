"""Each setting is declared once: options, variables, defaults and README's table all come from it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from taskserver.config import Config
from taskserver.errors import ConfigError

from .harness import PYTHON

pytestmark = pytest.mark.fast  # the in-process layer: make test-fast, and first in make test

README = Path(__file__).resolve().parent.parent / "README.md"


def expected_rows() -> list[str]:
    """README's configuration table, as the declarations in taskserver/config.py make it."""
    rows = []
    for f in Config.settings():
        option = f"`{Config.option(f)}`" if f.metadata["commands"] else ""
        default = Config.shown_default(f)
        rows.append(f"| {option} | `{Config.variable(f)}` | {'none' if default == 'none' else f'`{default}`'} |"
                    f" {f.metadata['help']} |")
    return rows


def test_readme_configuration_table_is_the_declared_settings():
    text = README.read_text()
    section = text[text.index("## Configuration"):text.index("## Troubleshooting")]
    table = [line for line in section.splitlines()  # the coordinator's rows (the worker host's table follows)
             if line.startswith("|") and line.split("|")[2].strip().startswith("`TASKSERVER_")]
    assert table == expected_rows(), "README's table should read:\n" + "\n".join(expected_rows())


def test_options_variables_and_defaults_come_from_one_declaration(tmp_path):
    help_text = subprocess.run([PYTHON, "-m", "taskserver", "serve", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}).stdout
    for f in Config.settings():
        if "serve" in f.metadata["commands"]:
            assert Config.option(f) in help_text and f"${Config.variable(f)})" in help_text, f.name
    assert "--secret-key" not in help_text  # a key on a command line would show in ps
    config = Config.from_env({"TASKSERVER_LEASE_SECONDS": "30", "TASKSERVER_PER_NVR": "4"}, per_nvr=3)
    assert (config.lease_seconds, config.per_nvr, config.max_attempts) == (30.0, 3, 5)  # option > variable > default
    with pytest.raises(ConfigError, match="TASKSERVER_PORT='http' is not a number"):
        Config.from_env({"TASKSERVER_PORT": "http"})
