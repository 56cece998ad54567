"""The deployment files say what they should: service units systemd accepts, examples that load, no secrets."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskclient.config import HostConfig, read_file
from taskserver.sheet import load_sheet

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"


def test_the_service_units_pass_systemd_analyze_verify_without_a_warning(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here; the units are checked where it is")
    bin_dir = Path(sys.executable).parent  # the units' programs, as installed here
    for unit in ("taskserver.service", "taskclient.service"):
        text = (UNITS / unit).read_text()
        assert "ExecStart=/opt/taskserver/bin/" in text
        (tmp_path / unit).write_text(text.replace("/opt/taskserver/bin/", f"{bin_dir}/"))
    checked = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / u) for u in
                                                             ("taskserver.service", "taskclient.service"))],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    for unit in ("taskserver.service", "taskclient.service"):
        text = (UNITS / unit).read_text()
        for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure", "User=",
                          "PrivateTmp=yes", "CapabilityBoundingSet=\n"):
            assert hardening in text, (unit, hardening)
    assert "KillMode=mixed" in (UNITS / "taskclient.service").read_text()  # SIGTERM to the host process only


def test_the_example_worker_configs_load(tmp_path):
    config = HostConfig.load({"config": str(UNITS / "taskclient.conf")}, {})
    assert config.server == ("https://exports.example.com",) and config.downloads == "/srv/exports"
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```toml\n(# /etc/taskclient.conf.*?)```", readme, re.DOTALL).group(1)
    (tmp_path / "readme.conf").write_text(example)
    assert read_file(tmp_path / "readme.conf")["upload"] == "nas:cctv"


def test_the_compose_demo_sheet_is_the_demo_sheet_with_the_simulator_under_its_service_name():
    demo = load_sheet(ROOT / "tasks.xlsx")
    compose = load_sheet(ROOT / "deploy" / "demo-tasks.csv")
    assert len(demo) == len(compose) == 6
    for a, b in zip(demo, compose, strict=True):
        assert (a.server, b.server) == ("127.0.0.1:18554", "nvrsim:18554")
        assert a.__dict__ | {"server": "", "source": ""} == b.__dict__ | {"server": "", "source": ""}


def test_compose_takes_every_secret_from_the_env_file_and_the_example_holds_none():
    compose = (ROOT / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", compose))
    assert required == {"TASKSERVER_TOKEN", "POSTGRES_PASSWORD", "TASKSERVER_SECRET_KEY"}
    example = dict(re.findall(r"^(\w+)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert all(example[name] == "" for name in required)  # compose refuses to start until they are set
    for name in re.findall(r"\$\{(\w+)", compose):
        assert name in example or name in (
            "COORDINATOR_IMAGE", "WORKER_IMAGE", "POSTGRES_IMAGE", "NGINX_IMAGE", "BASE_IMAGE", "WORKER_CA_FILE",
            "WORKER1_DOWNLOADS", "WORKER2_DOWNLOADS", "FOOTAGE", "NVRSIM_DELAY"), name
    for name, value in re.findall(r"^\s*(\w*(?:PASSWORD|TOKEN|SECRET)\w*): (.+)$", compose, re.MULTILINE):
        assert value.startswith("${") or name == "NVRSIM_PASSWORD", name  # only the simulator's is written out
