"""The container files agree with the code: CLI subcommands, settings names, extras, entry point."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from optimum_bridge.cli import build_parser
from optimum_bridge.settings import Settings

from .conftest import ROOT

PROJECT_IMAGE = "optimum-bridge:local"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
SECRETS = {
    "OPTIMUM_CLIENT_SECRET",
    "BRIDGE_CALLBACK_SECRET",
    "BRIDGE_API_KEYS",
    "BRIDGE_TOKEN_ENCRYPTION_KEY",
    "SENTRY_DSN",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def known_settings() -> set[str]:
    names = {f.validation_alias for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)}
    return names | {"SENTRY_DSN"}


def subcommands() -> set[str]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in actions for name in action.choices}


def uses_project_image(service: dict[str, Any]) -> bool:
    return "build" in service or service.get("image") == PROJECT_IMAGE


def seconds(duration: str | int) -> float:
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a compose duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_spec_shape(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert "version" not in compose
    assert {"redis", "api", "worker", "flower", "sandbox"} <= set(services)


def test_project_services_run_real_cli_subcommands(services: dict[str, dict[str, Any]]) -> None:
    available = subcommands()
    assert "api" in available, "the CLI must register the `api` subcommand that compose runs"
    used = {}
    for name, service in services.items():
        if uses_project_image(service) and "entrypoint" not in service:
            command = service.get("command")
            assert isinstance(command, list) and command, f"{name}: needs an exec-form command"
            used[name] = command[0]
    assert used == {"api": "api", "worker": "worker", "sandbox": "sandbox"}
    assert set(used.values()) <= available


def test_flower_runs_the_project_celery_app(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    argv = [*flower.get("entrypoint", []), *flower["command"]]
    assert argv[0] == "celery"
    assert argv[argv.index("-A") + 1] == "optimum_bridge.worker"
    assert "flower" in argv
    assert uses_project_image(flower), "flower must import optimum_bridge.worker, so it runs from the project image"


def compose_variables(services: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, service in services.items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            found.setdefault(key, set()).add(name)
            for ref in INTERPOLATION.findall(str(value)):
                found.setdefault(ref, set()).add(name)
    return found


def test_compose_sets_only_known_settings_and_no_secrets(services: dict[str, dict[str, Any]]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    variables = compose_variables(services)
    everything = set(variables) | set(INTERPOLATION.findall(text))
    assert everything, "expected environment entries"
    assert everything <= known_settings(), f"unknown settings: {sorted(everything - known_settings())}"
    assert not (set(variables) & SECRETS), "secrets belong in .env, not in docker-compose.yml"
    for name, service in services.items():
        if uses_project_image(service):
            env_files = service.get("env_file")
            assert env_files == [{"path": ".env", "required": False}], name


def test_sandbox_profile_needs_no_credentials(services: dict[str, dict[str, Any]]) -> None:
    sandbox = services["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    assert sandbox["command"][:1] == ["sandbox"] and "0.0.0.0" in sandbox["command"]
    assert all("profiles" not in s for n, s in services.items() if n != "sandbox")
    for name in ("api", "worker", "flower"):
        env = services[name]["environment"]
        assert env["OPTIMUM_ENVIRONMENT"] == "${OPTIMUM_ENVIRONMENT:-sandbox}"
        assert env["OPTIMUM_API_URL"] == "${OPTIMUM_API_URL:-http://sandbox:8090}"
        assert env["OPTIMUM_TOKEN_URL"] == "${OPTIMUM_TOKEN_URL:-http://sandbox:8090/connect/token}"
        assert env["BRIDGE_REDIS_URL"] == "${BRIDGE_REDIS_URL:-redis://redis:6379/0}"
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        # A hard dependency on a profiled service would break a plain `docker compose up`.
        assert depends.get("sandbox", {"required": False}).get("required") is False


def test_redis_persists_and_reports_health(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]


def test_worker_is_scalable_and_stops_gracefully(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["stop_signal"] == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) >= 60


def test_api_listens_on_all_interfaces_with_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api["environment"]["BRIDGE_API_HOST"] == "0.0.0.0"
    assert any(str(port).endswith(":8080") for port in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def env_example_names() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)


def test_env_example_documents_every_setting_and_only_settings() -> None:
    names = env_example_names()
    assert set(names) <= known_settings(), f"unknown: {sorted(set(names) - known_settings())}"
    assert known_settings() <= set(names), f"missing: {sorted(known_settings() - set(names))}"
    active = re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert active == [], "every line of .env.example is commented out, so copying it changes nothing"


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_multi_stage_non_root_with_the_console_script() -> None:
    instructions = dockerfile()
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].startswith("python:") and "slim" in stages[-1]
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoints = [arg for op, arg in final if op == "ENTRYPOINT"]
    assert entrypoints == ['["optimum-bridge"]']
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "optimum-bridge" in pyproject["project"]["scripts"]
    assert not any(op == "ENV" and re.search(r"SECRET|API_KEYS|PASSWORD", arg) for op, arg in instructions)


def dockerfile_extras() -> set[str]:
    args = dict(arg.split("=", 1) for op, arg in dockerfile() if op == "ARG" and "=" in arg)
    return {e.strip() for e in args.get("EXTRAS", "").split(",") if e.strip()}


def test_dockerfile_extras_exist_in_pyproject() -> None:
    extras = dockerfile_extras()
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {}))
    assert extras <= declared, f"pyproject.toml lacks the optional extra(s) {sorted(extras - declared)}"


def test_dockerfile_extras_cover_what_the_services_run(services: dict[str, dict[str, Any]]) -> None:
    needs = {"api": "ingress", "sandbox": "sandbox", "flower": "flower"}  # a word of the command -> its extra
    required = {"sentry"}  # SENTRY_DSN may come from .env for any service
    for service in services.values():
        if uses_project_image(service):
            argv = [*service.get("entrypoint", []), *service.get("command", [])]
            required |= {extra for word, extra in needs.items() if word in argv}
    assert required <= dockerfile_extras(), f"the image lacks the extra(s) {sorted(required - dockerfile_extras())}"


def test_dockerignore_keeps_secrets_out_but_not_the_build_inputs() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in patterns and ".git" in patterns and ".venv" in patterns
    assert not {"pyproject.toml", "README.md", "optimum_bridge"} & set(patterns)


def test_env_files_used_by_compose_are_ignored_by_git() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert Path(ROOT / ".env.example").is_file()
