"""A worker host's settings are declared once: options, TASKCLIENT_* variables, a config file, README's table."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from taskclient.cli import parser
from taskclient.config import HostConfig
from taskclient.errors import SetupError

from .harness import PYTHON

pytestmark = pytest.mark.fast

README = Path(__file__).resolve().parent.parent / "README.md"


def expected_rows() -> list[str]:
    """README's table of worker options, as the declarations in taskclient/config.py make it."""
    rows = []
    for f in HostConfig.settings():
        metavar = f.metadata["metavar"] or "|".join(getattr(f.metadata["read"], "names", ()))
        metavar = f" {metavar}" if metavar else ""
        variables = ", ".join(f"`{v}`" for v in HostConfig.variables(f))
        default = HostConfig.shown_default(f)
        shown = default if default in ("none", "off") or " " in default else f"`{default}`"  # words stay words
        rows.append(f"| `{HostConfig.option(f)}{metavar}` | {variables} | {shown} | {f.metadata['help']} |")
    return rows


def load(argv: list[str], environ: dict | None = None) -> HostConfig:
    return HostConfig.load(parser().parse_args(argv), environ or {})


def test_readme_worker_options_table_is_the_declared_settings():
    text = README.read_text()
    section = text[text.index("Worker host settings"):text.index("## Troubleshooting")]
    table = [line for line in section.splitlines() if line.startswith("| `--")]
    assert table == expected_rows(), "README's worker table should read:\n" + "\n".join(expected_rows())


def test_an_option_beats_a_variable_which_beats_the_config_file_which_beats_the_default(tmp_path):
    conf = tmp_path / "taskclient.conf"
    conf.write_text('server = ["https://coord1.example:443", "https://coord2.example:443"]\n'
                    'workers = 6\nmin-free = "500M"\nnvr_timeout = 12\nservice = true\n'
                    'downloads = "/srv/exports"\nname = "from-file"\n')
    environ = {"TASKCLIENT_WORKERS": "4", "TASKCLIENT_NAME": "from-variable", "TASKSERVER_TOKEN": "old-name-token"}
    config = load(["--config", str(conf), "--name", "from-option"], environ)
    assert config.name == "from-option"  # option > variable > file
    assert config.workers == 4  # variable > file
    assert config.server == ("https://coord1.example:443", "https://coord2.example:443")  # file > default
    assert (config.min_free, config.nvr_timeout, config.service, config.downloads) == (
        500 * 1024**2, 12.0, True, "/srv/exports")
    assert config.token == "old-name-token"  # TASKSERVER_TOKEN still works
    assert config.drained_poll == 30.0 and config.runner == "hikload"  # defaults
    # The config file may also be named by a variable; --no-service turns off what the file turned on.
    assert load(["--no-service"], {"TASKCLIENT_CONFIG": str(conf)}).service is False
    assert load([], {"TASKCLIENT_CONFIG": str(conf)}).service is True


def test_the_older_variables_still_work_and_the_new_ones_win():
    assert load([], {"TASKSERVER_URL": "http://old:8080"}).server == ("http://old:8080",)
    both = load([], {"TASKSERVER_URL": "http://old:8080", "TASKCLIENT_SERVER": "http://a:1,http://b:2"})
    assert both.server == ("http://a:1", "http://b:2")
    assert load(["--server", "http://x:1", "--server", "http://y:2"], {"TASKSERVER_URL": "http://old:8080"}).server \
        == ("http://x:1", "http://y:2")
    assert load([], {}).server == ("http://127.0.0.1:8080",)


def test_a_bad_setting_is_refused_naming_where_it_came_from(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text('workers = "four"\n')
    with pytest.raises(SetupError, match=r"bad\.conf: workers: 'four' is not a whole number"):
        load(["--config", str(conf)])
    conf.write_text('wokers = 4\n')
    with pytest.raises(SetupError, match=r"bad\.conf: unknown setting 'wokers'; known: server, token"):
        load(["--config", str(conf)])
    conf.write_text('workers = 4\nworkers = 5\n')
    with pytest.raises(SetupError, match=r"bad\.conf: .*line 2"):
        load(["--config", str(conf)])
    with pytest.raises(SetupError, match=r"\$TASKCLIENT_MIN_FREE: '2 gigs' is not a size"):
        load([], {"TASKCLIENT_MIN_FREE": "2 gigs"})
    with pytest.raises(SetupError, match=r"\$TASKCLIENT_SERVICE: 'maybe' is not on or off"):
        load([], {"TASKCLIENT_SERVICE": "maybe"})
    with pytest.raises(SetupError, match=r"config file .*missing\.conf: No such file"):
        load(["--config", str(tmp_path / "missing.conf")])
    with pytest.raises(SetupError, match="--upload-delete needs --upload"):
        load(["--upload-delete"])


def test_help_lists_every_option_with_its_variable_and_a_bad_option_exits_2(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    help_text = subprocess.run([PYTHON, "-m", "taskclient", "--help"], capture_output=True, text=True, env=env).stdout
    for f in HostConfig.settings():
        assert HostConfig.option(f) in help_text and f"${HostConfig.variables(f)[0]})" in help_text, f.name
    bad = subprocess.run([PYTHON, "-m", "taskclient", "--workers", "0"], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert bad.returncode == 2 and "'0' is not a whole number of at least 1" in bad.stderr
    conf = tmp_path / "c.conf"
    conf.write_text('runner = "command"\n')
    bad = subprocess.run([PYTHON, "-m", "taskclient", "--config", str(conf)], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "taskclient: the command runner needs --command" in bad.stderr
