"""The docker-compose stack, run for real: the image built, the stack up, a signed callback received.

What an operator does, with podman standing in for Docker (no Docker engine runs
on CI's machines): ``optimum-bridge init-env``, ``optimum-bridge config check``,
then ``docker-compose.yml`` itself, unchanged, ``up --scale worker=2`` (the sandbox
profile named by the generated ``.env``); an operation submitted through the ingress with the key of the
generated ``.env``; its callback verified with ``standardwebhooks``; everything
torn down, volumes included.

Where no image registry can be reached, ``tests/support/stack/standin-images.sh`` builds
stand-ins for the base images from Debian's packages under the names the
Dockerfile and the compose file use (skipped when they exist, so CI pays for
debootstrap once per machine). Run with ``make test-stack``; marked ``stack``
so ``make test`` leaves it to ``.ci/run``, which installs podman first.

Two things differ from a Docker run, both for podman 4.3's sake, and both are
checked here by other means: the workers' ``extra_hosts: host-gateway`` (podman
4.3 rejects it) is dropped by an override file and the callback goes to
podman's own ``host.containers.internal``; and podman 4.3 without systemd runs
no health check on its own (podman-compose then skips ``service_healthy``), so
the test runs each service's health check itself with ``podman healthcheck run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from dotenv import dotenv_values
from standardwebhooks.webhooks import Webhook

from optimum_bridge.devstack.ports import free_port
from optimum_bridge.devstack.receiver import CallbackReceiver
from tests.support import ROOT, wait_until
from tests.unit.test_compose import IMAGE_PROGRAMS, REDIS_IMAGE

pytestmark = [pytest.mark.stack, pytest.mark.processes, pytest.mark.timeout(1200)]

STACK = ROOT / "tests" / "support" / "stack"
PROJECT_IMAGE = "optimum-bridge:local"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# podman 4.3 refuses `host-gateway`; everything else of the worker stays as the file has it.
BRIDGE_VARIABLES = ("OPTIMUM_", "BRIDGE_", "SENTRY_", "FLOWER_", "COMPOSE_")
OVERRIDE = "services:\n  worker:\n    extra_hosts: !override []\n"


def qualified(image: str) -> str:
    """``python:3.11`` as podman stores it: ``docker.io/library/python:3.11``."""
    name = image if "/" in image else f"library/{image}"
    return name if "." in name.split("/")[0] else f"docker.io/{name}"


def base_images() -> tuple[str, str]:
    """The Dockerfile's base image (every stage uses one) and the compose file's Redis image."""
    froms = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")}
    assert len(froms) == 1, f"expected one base image, got {sorted(froms)}"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return qualified(froms.pop()), qualified(compose["services"]["redis"]["image"])


@dataclass
class Podman:
    env: dict[str, str] = field(repr=False)
    compose: list[str]

    def run(self, *argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(argv[:4])}... exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def podman(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("podman", *args, **kw)  # type: ignore[arg-type]

    def compose_run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(*self.compose, *args, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def podman() -> Podman:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the stack test needs {' and '.join(missing)}: apt-get install podman runc debootstrap")
    # As an operator's shell: no bridge variable of this process may override the generated .env.
    env = {k: v for k, v in os.environ.items() if not k.startswith(BRIDGE_VARIABLES)}
    env["CONTAINERS_CONF"] = str(STACK / "containers.conf")
    return Podman(env, [str(Path(sys.executable).with_name("podman-compose"))])


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The base images (stand-ins when absent), then the project image from the real Dockerfile."""
    started = time.monotonic()
    python_image, redis_image = base_images()
    podman.run(str(STACK / "standin-images.sh"), python_image, redis_image, timeout=900)
    secret = ["--secret", f"id=pip_cert,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    podman.podman("build", *secret, "--target", "runtime", "-t", PROJECT_IMAGE, str(ROOT), timeout=900)
    print(f"stack: base and project images in {time.monotonic() - started:.0f}s")
    return PROJECT_IMAGE


@dataclass
class Stack:
    podman: Podman
    project: str
    env: dict[str, str] = field(repr=False)  # the generated .env: secrets

    def containers(self, service: str) -> list[str]:
        out = self.podman.podman(
            "ps",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        )
        return out.stdout.split()

    def one(self, service: str) -> str:
        names = self.containers(service)
        assert names, f"no running {service} container"
        return names[0]

    def port(self, name: str) -> int:
        return int(self.env[name])


def write_env(directory: Path) -> Path:
    """``optimum-bridge init-env`` as an operator runs it, then ``config check``; host ports made free."""
    cli = str(Path(sys.executable).with_name("optimum-bridge"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(BRIDGE_VARIABLES)}
    subprocess.run([cli, "init-env"], cwd=directory, env=clean, check=True, timeout=60, capture_output=True)
    check = subprocess.run(
        [cli, "config", "check"], cwd=directory, env=clean, timeout=60, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    path = directory / ".env"
    ports = {name: free_port() for name in ("REDIS", "API", "FLOWER", "SANDBOX")}
    with path.open("a") as file:
        file.writelines(f"BRIDGE_{name}_HOST_PORT={port}\n" for name, port in ports.items())
    return path


@pytest.fixture(scope="module")
def stack(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("stack")
    env_file = write_env(directory)
    # The README's `docker compose up --scale worker=N`: the sandbox comes through the
    # COMPOSE_PROFILES of the generated .env, as it does for an operator.
    services = ("api", "worker", "redis", "flower", "sandbox")
    with compose_stack(podman, env_file, f"obrstack{os.getpid()}", "--scale", "worker=2", logs=services) as running:
        yield running


@contextmanager
def compose_stack(
    podman: Podman, env_file: Path, project: str, *up: str, logs: tuple[str, ...], timeout: float = 120
) -> Iterator[Stack]:
    """``up -d`` of the compose file with the ``.env`` at ``env_file`` until the ingress answers; then the
    last log lines of the ``logs`` services, ``down -v`` and whatever it left."""
    override = env_file.with_name("override.yml")
    override.write_text(OVERRIDE)
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]
    compose = Podman(podman.env, [*podman.compose, *files, "--env-file", str(env_file), "-p", project])
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    running = Stack(compose, project, values)
    started = time.monotonic()
    try:
        compose.compose_run("up", "-d", "--no-build", *up)
        wait_until(lambda: healthz(running), timeout=timeout, interval=0.25, what="the ingress's /healthz")
        print(f"{project}: up in {time.monotonic() - started:.0f}s")
        yield running
    finally:
        for service in logs:
            for name in running.containers(service):
                output = podman.podman("logs", name, check=False)
                print(f"--- {name}\n{last_lines(output.stdout + output.stderr)}")
        compose.compose_run("down", "-v", "-t", "20", "--remove-orphans", check=False)
        remove_leftovers(podman, project)


#: Log lines that drown what matters: a sentinel logs this several times a second for as long as
#: a killed primary's name does not resolve on the compose network (the ha test's kill).
NOISE = "Failed to resolve hostname"


def last_lines(log: str, count: int = 40) -> str:
    """The last ``count`` lines of ``log`` but those saying ``NOISE``, and how many of those were dropped:
    a sentinel's +sdown, +odown, +try-failover, -failover-abort-* or +tilt, not 30 lines of one error."""
    lines = log.splitlines()
    kept = [line for line in lines if NOISE not in line]
    dropped = len(lines) - len(kept)
    note = [f"({dropped} lines of '{NOISE}' dropped)"] if dropped else []
    return "\n".join([*kept[-count:], *note]) + "\n"


def remove_leftovers(podman: Podman, project: str) -> None:
    """What ``down`` left: podman-compose 1.6 removes only the first replica of a scaled service in
    order, then the others (--remove-orphans), while podman refuses to remove a container another
    one requires (depends_on), so a few remain; removed here, then nothing of the project may be left."""
    label = f"label=com.docker.compose.project={project}"
    left = podman.podman("ps", "-a", "--filter", label, "-q").stdout.split()
    if left:
        print(f"stack: down left {len(left)} container(s); removing them")
        podman.podman("rm", "-f", "--depend", *left, check=False)
    volumes = podman.podman("volume", "ls", "--filter", label, "-q").stdout.split()
    if volumes:
        podman.podman("volume", "rm", "-f", *volumes, check=False)
    podman.podman("network", "rm", "-f", f"{project}_default", check=False)
    assert not podman.podman("ps", "-a", "--filter", label, "-q").stdout.split(), "containers left"
    assert not podman.podman("volume", "ls", "--filter", label, "-q").stdout.split(), "volumes left"


def healthz(stack: Stack) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{stack.port('BRIDGE_API_HOST_PORT')}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_every_service_runs_and_passes_its_health_check(stack: Stack) -> None:
    assert len(stack.containers("worker")) == 2
    for service in ("redis", "api", "flower", "sandbox"):
        assert stack.containers(service), f"{service} is not running"
    for service in ("redis", "api"):  # podman 4.3 without systemd schedules none: run them as Docker would
        result = stack.podman.podman("healthcheck", "run", stack.one(service), check=False)
        assert result.returncode == 0, f"{service} is unhealthy: {result.stdout}{result.stderr}"
    users = {
        service: stack.podman.podman("exec", stack.one(service), "id", "-un").stdout.strip()
        for service in ("redis", "api", "worker")
    }
    assert users == {"redis": "redis", "api": "bridge", "worker": "bridge"}, "nothing runs as root"
    # The Redis check answers for the password: the same probe with a wrong one fails.
    wrong = stack.podman.podman(
        "exec",
        "-e",
        "REDISCLI_AUTH=wrong",
        stack.one("redis"),
        "sh",
        "-c",
        "redis-cli ping | grep -q PONG",
        check=False,
    )
    assert wrong.returncode != 0


def test_redis_wants_the_password_keeps_jobs_and_listens_on_loopback(stack: Stack) -> None:
    port = stack.port("BRIDGE_REDIS_HOST_PORT")
    published = stack.podman.podman("port", stack.one("redis")).stdout
    assert re.findall(r"-> ([\d.]+):(\d+)", published) == [("127.0.0.1", str(port))], published
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    client = redis.Redis(port=port, password=stack.env["BRIDGE_REDIS_PASSWORD"])
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert int(client.config_get("maxmemory")["maxmemory"]) > 0
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("dir") == {"dir": "/data"}, "the AOF must land in the volume"
    client.set("stack-test:kept", "yes")  # a key of this test's own stack, which down -v removes
    stack.podman.podman("restart", "-t", "10", stack.one("redis"))
    wait_until(lambda: _pings(client), timeout=60, interval=0.2, what="Redis after its restart")
    assert client.get("stack-test:kept") == b"yes", "AOF: what Redis held survives a restart"
    client.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_flower_asks_for_its_login(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.port('BRIDGE_FLOWER_HOST_PORT')}/api/workers"
    wait_until(lambda: _answers(url), timeout=60, interval=0.25, what="Flower")
    assert httpx.get(url, timeout=10).status_code == 401
    user, _, password = stack.env["FLOWER_BASIC_AUTH"].partition(":")
    assert httpx.get(url, auth=(user, password), timeout=10).status_code == 200
    given = {line.partition("=")[0] for line in stack.podman.podman("exec", stack.one("flower"), "env").stdout.split()}
    assert not given & {"BRIDGE_CALLBACK_SECRET", "BRIDGE_API_KEYS", "OPTIMUM_CLIENT_SECRET"}


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True


def test_an_operation_through_the_ingress_comes_back_as_a_signed_callback(stack: Stack) -> None:
    worker = stack.one("worker")
    resolve = "import socket; print(socket.gethostbyname('host.containers.internal'))"
    host_ip = stack.podman.podman("exec", worker, "python", "-c", resolve).stdout.strip()
    with CallbackReceiver(host=host_ip) as receiver:
        callback = f"http://host.containers.internal:{receiver.url.rsplit(':', 1)[1]}"
        operation = {
            "method": "GET",
            "path": "/Vehicles",
            "callback": {"url": callback},
            "metadata": {"via": "compose"},
        }
        key = stack.env["BRIDGE_API_KEYS"].split(",")[0]
        answer = httpx.post(
            f"http://127.0.0.1:{stack.port('BRIDGE_API_HOST_PORT')}/v1/operations",
            json=operation,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        receiver.wait(lambda: receiver.received, timeout=180, what="the callback")
    delivered = receiver.received[0]
    payload = Webhook(stack.env["BRIDGE_CALLBACK_SECRET"]).verify(delivered.body, delivered.headers)
    assert payload["type"] == "operation.succeeded", json.dumps(payload)[:500]
    assert payload["data"]["id"] == job_id
    assert payload["data"]["operation"]["metadata"] == {"via": "compose"}
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook("whsec_" + "A" * 44).verify(delivered.body, delivered.headers)


def test_a_worker_without_its_simulator_stops_saying_why(podman: Podman, image: str) -> None:
    """`up` without the sandbox profile, OPTIMUM_ENVIRONMENT=sandbox: one line and exit 2, not hours of retries."""
    env = {
        "OPTIMUM_ENVIRONMENT": "sandbox",
        "OPTIMUM_SANDBOX_URL": "http://sandbox:8090",  # as the compose file sets it
        "BRIDGE_REDIS_URL": "redis://:pw@redis:6379/0",
    }
    flags = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    done = podman.podman("run", "--rm", "--network", "none", *flags, image, "worker", check=False, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "OPTIMUM_SANDBOX_URL: the simulator's host 'sandbox' does not resolve" in done.stderr


def test_the_programs_test_compose_counts_on_are_in_the_images(podman: Podman, image: str) -> None:
    """tests/unit/test_compose.py checks health checks against IMAGE_PROGRAMS; here that list meets the images."""
    for name, programs in IMAGE_PROGRAMS.items():
        tag = image if name == PROJECT_IMAGE else qualified(REDIS_IMAGE)
        script = " && ".join(f"command -v {program}" for program in sorted(programs))
        found = podman.podman("run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", script, check=False)
        assert found.returncode == 0, f"{name}: missing one of {sorted(programs)}: found {found.stdout.split()}"
