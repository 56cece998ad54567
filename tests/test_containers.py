"""The deployment in containers: images built from the Containerfile, the compose stack with its demo.

Runs with `make test-containers` (it builds images: minutes, so plain `make test` skips it).
It needs podman and podman-compose (or docker with its compose plugin). Without a registry,
give a local Debian base image (TASKSERVER_TEST_BASE, default `localhost/debian-base:bookworm`
when it exists): the test then builds stand-ins for the postgres and nginx images from it too.
A CA bundle for pip inside the build goes in as a build secret (TASKSERVER_HOST_CA).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from .harness import free_port, wait_for
from .tlsca import SERVER_NAME, make_ca, make_server_cert

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "taskserver-test"
TAG = "test"


class Engine:
    """podman (with podman-compose) or docker (with its compose plugin)."""

    def __init__(self):
        if shutil.which("podman") and shutil.which("podman-compose"):
            self.name, self.compose = "podman", ["podman-compose"]
        elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                       capture_output=True).returncode == 0:
            self.name, self.compose = "docker", ["docker", "compose"]
        else:
            raise LookupError("no container runtime: podman with podman-compose, or docker with compose")

    def run(self, *args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([self.name, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def build(self, tag: str, containerfile: Path, context: Path, base: str, target: str | None = None) -> float:
        """Build an image; returns the seconds it took."""
        args = ["build", "-t", tag, "-f", str(containerfile), "--build-arg", f"BASE={base}"]
        if self.name == "podman":
            args += ["--format", "docker", "--pull=never" if self.has_image(base) else "--pull=missing"]
        ca = os.environ.get("TASKSERVER_HOST_CA")
        if ca and Path(ca).is_file():
            args += ["--secret", f"id=ca,src={ca}"]
        if target:
            args += ["--target", target]
        began = time.monotonic()
        self.run(*args, str(context), timeout=1800)
        return time.monotonic() - began

    def size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())

    def volumes_of(self, project: str) -> list[str]:
        """The volumes that a compose project's containers use."""
        ids = self.run("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        if not ids:
            return []
        mounts = self.run("inspect", "--format", "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
                          *ids).stdout.split()
        return sorted(set(mounts))

    def container(self, service: str) -> str:
        separator = "_" if self.name == "podman" else "-"
        return f"{PROJECT}{separator}{service}{separator}1"


@pytest.fixture(scope="module")
def engine():
    if os.environ.get("TASKSERVER_CONTAINER_TESTS") != "1":
        pytest.skip("the container story runs with `make test-containers` (it builds images)")
    try:
        return Engine()
    except LookupError as exc:
        if os.environ.get("TASKSERVER_REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"containers required but unusable: {exc}")
        pytest.skip(str(exc))


def base_image(engine: Engine) -> str:
    wanted = os.environ.get("TASKSERVER_TEST_BASE")
    if wanted:
        return wanted
    local = "localhost/debian-base:bookworm"
    return local if engine.has_image(local) else "docker.io/library/python:3.11-slim"


@pytest.fixture(scope="module")
def images(engine, tmp_path_factory):
    """The two images from the Containerfile, and local stand-ins for postgres and nginx when without a registry."""
    base = base_image(engine)
    figures = {"base": base, "engine": engine.name}
    tags = {"COORDINATOR_IMAGE": f"localhost/taskserver-coordinator:{TAG}",
            "WORKER_IMAGE": f"localhost/taskserver-worker:{TAG}"}
    for tag, target in zip(tags.values(), ("coordinator", "worker"), strict=True):
        figures[f"{target} build seconds"] = round(engine.build(tag, ROOT / "Containerfile", ROOT, base, target), 1)
        figures[f"{target} image MB"] = round(engine.size(tag) / 1e6)
    if base.startswith("localhost/"):  # no registry: build what compose would pull
        stand_ins = ROOT / "tests" / "containers"
        for variable, name in (("POSTGRES_IMAGE", "postgres"), ("NGINX_IMAGE", "nginx")):
            tags[variable] = f"localhost/taskserver-test-{name}:{TAG}"
            engine.build(tags[variable], stand_ins / f"{name}.Containerfile", stand_ins, base)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "containers.json").write_text(json.dumps(figures, indent=1))
    print(f"\ncontainer images: {json.dumps(figures)}")
    return tags


@pytest.fixture
def stack(engine, images, tmp_path):
    """The compose stack with the demo profile, on a free loopback port; taken down (volumes too) afterwards."""
    tls = tmp_path / "tls"
    tls.mkdir()
    crt, key = make_server_cert(tls, make_ca(tls, "ca"))
    key.chmod(0o644)  # read by nginx inside its container; the folder is the test's own
    shared = {name: tmp_path / name for name in ("footage", "worker1", "worker2")}
    for folder in shared.values():
        folder.mkdir()
        folder.chmod(0o777)  # the images' own user writes here
    port = free_port()
    token = secrets.token_urlsafe(18)
    env = {**images, "TASKSERVER_TOKEN": token, "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
           "TASKSERVER_SECRET_KEY": Fernet.generate_key().decode(), "PUBLIC_HOST": SERVER_NAME,
           "HTTPS_ADDRESS": "127.0.0.1", "HTTPS_PORT": str(port), "TLS_DIR": str(tls),
           "FOOTAGE": str(shared["footage"]), "WORKER1_DOWNLOADS": str(shared["worker1"]),
           "WORKER2_DOWNLOADS": str(shared["worker2"]), "UPLOAD": "/footage", "NVRSIM_DELAY": "0.01"}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    compose = [*engine.compose, "-p", PROJECT, "-f", str(ROOT / "compose.yaml"), "--env-file", str(env_file),
               "--profile", "demo"]

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([*compose, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        assert done.returncode == 0, f"compose {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done
    run("down", "-v", "-t", "5")
    try:
        run("up", "-d", "--no-build")
        yield {"run": run, "url": f"https://127.0.0.1:{port}", "ca": str(tls / "ca.pem"), "token": token,
               "footage": shared["footage"]}
    finally:
        logs = subprocess.run([*compose, "logs"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
        anonymous = engine.volumes_of(PROJECT)  # the images' VOLUME folders; `down -v` leaves them
        subprocess.run([*compose, "down", "-v", "-t", "10"], capture_output=True, timeout=300, cwd=ROOT)
        if anonymous:
            engine.run("volume", "rm", *anonymous, check=False)


def test_the_compose_stack_exports_the_demo_sheet_through_nginx_survives_a_coordinator_and_stops_cleanly(
        engine, stack):
    from demo import verify

    def call(path: str, method: str = "GET", **kwargs):
        response = requests.request(method, stack["url"] + path, verify=stack["ca"], timeout=10,
                                    headers={"Authorization": f"Bearer {stack['token']}"}, **kwargs)
        response.raise_for_status()
        return response.json()

    def answers():
        try:
            return call("/api/status")["tasks"] == 6  # the demo sheet is imported
        except (requests.RequestException, ValueError):
            return False
    wait_for(answers, 180, interval=1, what="the stack to answer through nginx with the demo sheet imported")
    if engine.name == "podman":  # the image's own health check on /healthz (docker runs it by itself)
        # nginx answers through coord1 while coord2 may still be starting: wait for coord2's own check.
        wait_for(lambda: engine.run("healthcheck", "run", engine.container("coord2"), check=False).returncode == 0,
                 120, interval=2, what="coord2's health check to pass")

    def mid_run():
        counts = call("/api/status")["counts"]
        return counts["done"] >= 1 and counts["queued"] + counts["leased"] >= 2
    wait_for(mid_run, 180, interval=0.5, what="the demo run to be under way")
    engine.run("kill", engine.container("coord1"))

    def drained():
        try:
            status = call("/api/status")
        except requests.RequestException:
            return False
        return status["drained"] and status["counts"]["done"] == 6 and status
    status = wait_for(drained, 300, interval=1, what="the demo sheet to be exported to the sentinel")
    assert verify(stack["footage"]) == status["files"] > 0  # byte for byte, all in one place
    located = [f for t in range(1, 7) for f in call(f"/api/tasks/{t}/files")["files"]]
    assert len(located) == status["files"] and all(f["location"].startswith("/footage/") for f in located)
    assert {f["host"] for f in located} <= {"worker1", "worker2"}

    # A clean stop: both worker hosts exit 0 and the coordinators show them stopped, not lost.
    stack["run"]("stop", "-t", "60", "worker1", "worker2")
    for service in ("worker1", "worker2"):
        state = json.loads(engine.run("inspect", "--format", "{{json .State}}", engine.container(service)).stdout)
        assert state["ExitCode"] == 0, (service, state)
    workers = call("/api/status")["workers"]
    mine = [w for w in workers if w["name"].startswith(("worker1", "worker2"))]
    assert mine and all(w["state"] == "stopped" and not w["lost"] for w in mine), mine
    stack["run"]("stop", "-t", "30")  # the rest of the stack: the coordinator that lived closes and exits 0
    state = json.loads(engine.run("inspect", "--format", "{{json .State}}", engine.container("coord2")).stdout)
    assert state["ExitCode"] == 0, state
