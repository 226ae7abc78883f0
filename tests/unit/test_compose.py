"""The container files, read statically: what matters for a stack that starts, and is safe, on its first run.

Which service may hold which secret; ports on loopback only; health checks whose
programs exist in their image and that test what they claim; Redis that never
evicts a job; an init process everywhere; the environment chosen by
OPTIMUM_ENVIRONMENT alone; pinned images. ``tests/system/test_stack.py`` runs the same
files for real; this file is what a machine without a container engine checks.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from importlib.metadata import version
from typing import Any

import pytest
import yaml

from optimum_bridge.cli import build_parser
from optimum_bridge.settings import OPTIONAL, Settings
from tests.support import ROOT

PROJECT_IMAGE = "optimum-bridge:local"
REDIS_IMAGE = "redis:7.0.15-bookworm"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")

#: The ha profile's services (spec §16).
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
HA = {"redis-replica", *SENTINELS}
#: Where a Redis password may be in a variable of its own (redis-cli reads REDISCLI_AUTH).
PASSWORD_VARIABLES = {"redis": {"REDISCLI_AUTH"}, "redis-replica": {"REDISCLI_AUTH"}} | {
    name: {"SENTINEL_AUTH_PASS"} for name in SENTINELS
}
#: Each secret, and the services that use it (and why); no other service may be given it.
SECRET_USERS = {
    "OPTIMUM_CLIENT_SECRET": {"worker"},  # the workers fetch the token
    "BRIDGE_TOKEN_ENCRYPTION_KEY": {"worker"},  # the workers write and read the token
    "BRIDGE_CALLBACK_SECRET": {"worker"},  # the workers sign the callbacks
    "BRIDGE_API_KEYS": {"api"},  # the ingress checks them
    "FLOWER_BASIC_AUTH": {"flower"},
    # In BRIDGE_REDIS_URL; the replica and the sentinels (profile ha) authenticate to the primary with it.
    "BRIDGE_REDIS_PASSWORD": {"redis", "api", "worker", "flower", "redis-replica", *SENTINELS},
    "SENTRY_DSN": {"api", "worker"},
}
#: What each image holds (the stand-ins of tests/stack hold the same; tests/system/test_stack.py runs the checks).
IMAGE_PROGRAMS = {
    PROJECT_IMAGE: {"python", "optimum-bridge", "celery", "sh"},
    REDIS_IMAGE: {"redis-cli", "redis-server", "sh", "grep"},
}
#: Variables that only docker-compose.yml reads (or the image's own programs), documented in .env.example.
COMPOSE_ONLY = {
    "COMPOSE_PROFILES",
    "BRIDGE_REDIS_PASSWORD",
    "BRIDGE_REDIS_MAXMEMORY",
    "BRIDGE_REDIS_HOST_PORT",
    "BRIDGE_API_HOST_PORT",
    "BRIDGE_FLOWER_HOST_PORT",
    "BRIDGE_SANDBOX_HOST_PORT",
    "FLOWER_BASIC_AUTH",
    "FLOWER_ENABLE_EVENTS",
    "BRIDGE_REDIS_SCHEME",
    "BRIDGE_REDIS_ADDRESS",
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


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def references(text: str) -> set[str]:
    return {match[0] for match in INTERPOLATION.findall(text)}


def given(service: dict[str, Any]) -> set[str]:
    """Every variable a service receives or whose value reaches it: its names, and every ${VAR} in it."""
    env = environment(service)
    command = yaml.safe_dump({k: service.get(k) for k in ("command", "entrypoint", "healthcheck")})
    return set(env) | {ref for value in env.values() for ref in references(value)} | references(command)


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
    assert set(services) == {"redis", "api", "worker", "flower", "sandbox", *HA}


def test_project_services_run_real_cli_subcommands(services: dict[str, dict[str, Any]]) -> None:
    available = subcommands()
    used = {}
    for name, service in services.items():
        if uses_project_image(service) and "entrypoint" not in service:
            command = service.get("command")
            assert isinstance(command, list) and command, f"{name}: needs an exec-form command"
            used[name] = command[0]
    assert used == {"api": "api", "worker": "worker", "sandbox": "sandbox"}
    assert set(used.values()) <= available
    assert {"init-env", "config"} <= available, "the README's first step"


def test_no_service_is_given_a_secret_it_does_not_use(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "env_file" not in service, f"{name}: env_file hands every secret of .env to the service"
        for secret in given(service) & set(SECRET_USERS):
            assert name in SECRET_USERS[secret], f"{name} is given {secret}, which it does not use"
    for secret, users in SECRET_USERS.items():
        for user in users:
            assert secret in given(services[user]), f"{user} needs {secret}"
    assert not given(services["sandbox"]), "the simulator needs no setting of the bridge"
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"whsec_|(PASSWORD|SECRET|KEYS|AUTH): [^$\s]", text), "a literal secret in the file"


def test_required_secrets_fail_the_start_with_a_message(services: dict[str, dict[str, Any]]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = {name for name, kind, _ in INTERPOLATION.findall(text) if kind == ":?"}
    assert {"BRIDGE_API_KEYS", "BRIDGE_CALLBACK_SECRET", "BRIDGE_REDIS_PASSWORD", "FLOWER_BASIC_AUTH"} <= required
    assert "OPTIMUM_ENVIRONMENT" in required, "a stack never guesses the environment"


def test_every_variable_is_a_setting_or_documented_compose_input(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        names = set(environment(service))
        allowed = known_settings() | PASSWORD_VARIABLES.get(name, set()) | COMPOSE_ONLY
        assert names <= allowed, f"{name}: unknown variables {sorted(names - allowed)}"
    text = yaml.safe_dump(services)  # the values, not the comments
    documented = set(env_example_names())
    assert references(text) <= documented, f"undocumented in .env.example: {sorted(references(text) - documented)}"


def test_compose_defaults_are_the_applications(services: dict[str, dict[str, Any]]) -> None:
    fields = {f.validation_alias: f for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)}
    checked = 0
    for service in services.values():
        for key, value in environment(service).items():
            match = INTERPOLATION.fullmatch(value)
            if key in fields and match and match[2] == ":-":
                default = fields[key].default
                expected = (
                    "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
                )
                assert match[3] == expected, f"{key}: compose default {match[3]!r}, application default {expected!r}"
                checked += 1
    assert checked >= 5


def test_the_environment_alone_picks_the_urls(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        env = environment(service)
        assert not {"OPTIMUM_API_URL", "OPTIMUM_TOKEN_URL"} & set(env), f"{name}: URL overrides outlive a switch"
        if "OPTIMUM_SANDBOX_URL" in env:
            assert env["OPTIMUM_SANDBOX_URL"] == "http://sandbox:8090"
    sandbox = services["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    assert sandbox["command"][:1] == ["sandbox"] and "0.0.0.0" in sandbox["command"]
    assert all("profiles" not in s for n, s in services.items() if n != "sandbox" and n not in HA)
    for name in ("api", "worker", "flower"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        # A hard dependency on a profiled service would break a plain `docker compose up`.
        assert depends.get("sandbox", {"required": False}).get("required") is False


def test_published_ports_are_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is not loopback-only"
            host = port.split(":")[1] if not port.startswith("127.0.0.1:${") else port.split(":-", 1)[1].split("}")[0]
            assert host.isdigit() and host != "0", f"{name}: host port {host!r} (podman refuses 0)"
    redis_host = services["redis"]["ports"][0]
    assert "${BRIDGE_REDIS_HOST_PORT:-" in redis_host and ":-6379}" not in redis_host, "6379 is the host's Redis"


def healthcheck_programs(test: list[str]) -> tuple[set[str], str]:
    kind, *rest = test
    if kind == "CMD":
        return {rest[0]}, " ".join(rest)
    assert kind == "CMD-SHELL", kind
    script = rest[0]
    return {shlex.split(part)[0] for part in re.split(r"\||&&|;", script) if part.strip()} | {"sh"}, script


def test_health_checks_use_programs_of_their_image_and_check_what_they_claim(
    services: dict[str, dict[str, Any]],
) -> None:
    checked = {}
    for name, service in services.items():
        if "healthcheck" not in service:
            continue
        image = PROJECT_IMAGE if uses_project_image(service) else service["image"]
        programs, script = healthcheck_programs(service["healthcheck"]["test"])
        assert programs <= IMAGE_PROGRAMS[image], f"{name}: {sorted(programs - IMAGE_PROGRAMS[image])} not in {image}"
        checked[name] = script
    assert set(checked) == {"redis", "api", *HA}
    # redis-cli exits 0 on NOAUTH too: the check must look for the PONG, with the password from REDISCLI_AUTH.
    for name in ("redis", "redis-replica"):
        assert "ping" in checked[name] and "grep -q PONG" in checked[name]
        assert "REDISCLI_AUTH" in environment(services[name])
    for name in SENTINELS:
        assert "-p 26379 ping" in checked[name] and "grep -q PONG" in checked[name]
    assert "/healthz" in checked["api"]


def test_redis_keeps_every_job_and_hides_its_password(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    redis = services["redis"]
    assert redis["image"] == REDIS_IMAGE
    assert redis["user"] == "redis", "not root: the image drops root only for a plain redis-server command"
    command = " ".join(redis["command"])
    maxmemory = "--maxmemory ${BRIDGE_REDIS_MAXMEMORY:-"
    for flag in ("--dir /data", "--appendonly yes", "--maxmemory-policy noeviction", maxmemory):
        assert flag in command
    # The password reaches redis-server on stdin, never on its command line (ps, inspect).
    assert "requirepass $$REDISCLI_AUTH" in command and "redis-server - " in command
    assert "BRIDGE_REDIS_PASSWORD" not in command
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]
    for name in ("api", "worker", "flower"):
        url = environment(services[name])["BRIDGE_REDIS_URL"]
        assert url.startswith("${BRIDGE_REDIS_SCHEME:-redis}://:${BRIDGE_REDIS_PASSWORD:?")
        assert url.endswith("@${BRIDGE_REDIS_ADDRESS:-redis:6379/0}")


def test_every_service_has_an_init_and_a_bounded_restart(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("init") is True, f"{name}: needs init: true"
        if uses_project_image(service):
            # A configuration error exits 2: retried a few times, not forever.
            assert re.fullmatch(r"on-failure:\d+", service["restart"]), name


def test_flower_is_behind_a_login_and_events_are_a_choice(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    argv = [*flower.get("entrypoint", []), *flower["command"]]
    assert argv[0] == "celery" and "flower" in argv
    assert argv[argv.index("-A") + 1] == "optimum_bridge.process.flower", "the broker only, no credentials asked"
    assert uses_project_image(flower)
    env = environment(flower)
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert env["FLOWER_ENABLE_EVENTS"] == "${FLOWER_ENABLE_EVENTS:-false}"


def test_monitor_app_reads_the_broker_without_credentials() -> None:
    from optimum_bridge.process.flower import create_monitor_app

    settings = Settings(_env_file=None, OPTIMUM_ENVIRONMENT="production", BRIDGE_KEY_PREFIX="x:")  # type: ignore[call-arg]
    app = create_monitor_app(settings)
    assert app.conf.broker_transport_options["global_keyprefix"] == "x:"
    assert {queue.name for queue in app.conf.task_queues} == {"operations", "callbacks"} or app.conf.task_queues


def test_worker_is_scalable_logs_at_the_configured_level_and_reaches_the_host(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert not any(arg.startswith(("--loglevel", "-l")) for arg in worker["command"]), "BRIDGE_LOG_LEVEL decides"
    assert environment(worker)["BRIDGE_LOG_LEVEL"] == "${BRIDGE_LOG_LEVEL:-INFO}"
    assert worker["stop_signal"] == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) >= 60
    assert "host.docker.internal:host-gateway" in worker["extra_hosts"]


def test_api_listens_on_all_interfaces_with_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert environment(api)["BRIDGE_API_HOST"] == "0.0.0.0"
    assert any(str(port).endswith(":8080") for port in api["ports"])


def env_example_names() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)


def test_env_example_documents_every_setting_and_only_settings() -> None:
    names = set(env_example_names())
    assert names <= known_settings() | COMPOSE_ONLY, f"unknown: {sorted(names - known_settings() - COMPOSE_ONLY)}"
    assert known_settings() | COMPOSE_ONLY <= names, f"missing: {sorted(known_settings() | COMPOSE_ONLY - names)}"
    active = re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert active == [], "every line of .env.example is commented out, so copying it changes nothing"


def test_empty_optional_settings_mean_unset() -> None:
    empty = {Settings.model_fields[name].validation_alias: "" for name in OPTIONAL}
    settings = Settings(_env_file=None, **empty)  # type: ignore[call-arg]
    assert all(getattr(settings, name) is None for name in OPTIONAL if name not in {"client_id", "client_secret"})


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_multi_stage_non_root_pinned_with_the_console_script() -> None:
    instructions = dockerfile()
    stages = [arg.split()[0] for op, arg in instructions if op == "FROM"]
    assert len(stages) >= 2
    for image in stages:  # a full version and a distribution: the same base image tomorrow
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image), f"not a pinned tag: {image}"
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [arg for op, arg in final if op == "ENTRYPOINT"] == ['["optimum-bridge"]']
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "optimum-bridge" in pyproject["project"]["scripts"]
    assert not any(op == "ENV" and re.search(r"SECRET|API_KEYS|PASSWORD|CERT", arg) for op, arg in instructions)
    installs = [arg for op, arg in instructions if op == "RUN" and "pip install" in arg]
    assert installs and all(
        part.count("--constraint constraints.txt") == part.count("pip install") for part in installs
    ), "every pip install is pinned by constraints.txt"


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"constraints.txt: not a pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


def requirement_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]).lower()


def test_constraints_pin_everything_the_image_installs_as_tested() -> None:
    pins = constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = [*project["dependencies"]]
    for extra in dockerfile_extras():
        needed += [r for r in project["optional-dependencies"][extra] if not r.startswith("optimum-bridge")]
    missing = {requirement_name(r) for r in needed} - set(pins)
    assert not missing, f"constraints.txt lacks {sorted(missing)}: run make constraints"
    for name in ("pip", "celery", "kombu", "redis", "flower"):
        assert pins[name] == version(name), f"{name}: constraints.txt pins {pins[name]}, tests ran {version(name)}"


def dockerfile_extras() -> set[str]:
    args = dict(arg.split("=", 1) for op, arg in dockerfile() if op == "ARG" and "=" in arg)
    return {e.strip() for e in args.get("EXTRAS", "").split(",") if e.strip()}


def test_dockerfile_extras_exist_and_cover_what_the_services_run(services: dict[str, dict[str, Any]]) -> None:
    extras = dockerfile_extras()
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {}))
    assert extras <= declared, f"pyproject.toml lacks the optional extra(s) {sorted(extras - declared)}"
    needs = {"api": "ingress", "sandbox": "sandbox", "flower": "flower"}  # a word of the command -> its extra
    required = {"sentry"}  # SENTRY_DSN may be set for api and worker
    for service in services.values():
        if uses_project_image(service):
            argv = [*service.get("entrypoint", []), *service.get("command", [])]
            required |= {extra for word, extra in needs.items() if word in argv}
    assert required <= extras, f"the image lacks the extra(s) {sorted(required - extras)}"


def test_dockerignore_keeps_secrets_out_but_not_the_build_inputs() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in patterns and ".git" in patterns and ".venv" in patterns
    assert not {"pyproject.toml", "README.md", "optimum_bridge", "constraints.txt"} & set(patterns)


def test_env_files_used_by_compose_are_ignored_by_git() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert (ROOT / ".env.example").is_file()


def test_the_ha_profile_fails_over_without_losing_a_job(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """``docker compose --profile ha up``: a replica of ``redis`` and three sentinels, quorum 2 (spec §16)."""
    for name in HA:
        assert services[name]["profiles"] == ["ha"] and services[name]["image"] == REDIS_IMAGE
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert not services[name].get("ports"), f"{name}: the bridge's services reach it on the compose network"
    replica = " ".join(services["redis-replica"]["command"])
    primary = " ".join(services["redis"]["command"])
    for command in (primary, replica):  # either may be the primary after a failover
        for flag in ("--appendonly yes", "--maxmemory-policy noeviction", "masterauth $$REDISCLI_AUTH"):
            assert flag in command
        assert "BRIDGE_REDIS_PASSWORD" not in command
    assert "--replicaof redis 6379" in replica and "--replica-announce-ip redis-replica" in replica
    assert "--replica-announce-ip redis" in primary
    assert services["redis-replica"]["volumes"][0].split(":")[0] in compose["volumes"]
    for name in SENTINELS:
        config = " ".join(services[name]["command"])
        assert "sentinel monitor bridge redis 6379 2" in config and "--sentinel" in config
        assert "sentinel resolve-hostnames yes" in config.replace("\n", " ")
        assert "sentinel auth-pass bridge $$SENTINEL_AUTH_PASS" in config
    # The address the README gives for the ha profile is one the settings accept, service included.
    url = "redis+sentinel://:pw@sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/bridge/0"
    settings = Settings(_env_file=None, BRIDGE_REDIS_URL=url)  # type: ignore[call-arg]
    assert settings.redis_url.get_secret_value() == url
    assert (
        "BRIDGE_REDIS_ADDRESS=sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/bridge/0"
        in (ROOT / "docker-compose.yml").read_text()
    )
