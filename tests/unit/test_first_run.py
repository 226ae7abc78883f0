"""The first run and the environments: ``init-env`` then ``config check``, and where a secret may go.

In-process (the fast tier): ``optimum_bridge.cli.main`` as the console script
calls it, in a temporary working directory with no bridge variable set.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from optimum_bridge.cli import main
from optimum_bridge.config.environments import ENDPOINTS
from optimum_bridge.errors import ConfigError
from optimum_bridge.settings import load_settings
from tests.support import ROOT

SECRET_NAMES = ("BRIDGE_API_KEYS", "BRIDGE_CALLBACK_SECRET", "BRIDGE_REDIS_PASSWORD", "FLOWER_BASIC_AUTH")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with no .env, and an environment with no bridge setting (as an operator's shell)."""
    for name in list(__import__("os").environ):
        if name.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_", "FLOWER_", "COMPOSE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def values(path: Path) -> dict[str, str]:
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def test_init_env_then_config_check_is_a_working_first_run(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-env"]) == 0
    env = workdir / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    written = values(env)
    assert written["OPTIMUM_ENVIRONMENT"] == "sandbox"
    for name in SECRET_NAMES:
        assert len(written[name]) >= 24, name
    out = capsys.readouterr().out
    assert not any(written[name] in out for name in SECRET_NAMES), "init-env must not print the secrets"

    assert main(["config", "check"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("ok: account default: sandbox: API http://127.0.0.1:8090")
    settings = load_settings()
    assert settings.callback_secret is not None and settings.api_keys


def test_init_env_keeps_an_existing_file_unless_forced(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-env"]) == 0
    first = (workdir / ".env").read_text()
    assert main(["init-env"]) == 2
    assert ".env exists" in capsys.readouterr().err
    assert (workdir / ".env").read_text() == first
    assert main(["init-env", "--force"]) == 0
    again = values(workdir / ".env")
    assert all(again[name] != values_of(first)[name] for name in SECRET_NAMES), "every secret is drawn anew"


def values_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_init_env_writes_everything_the_compose_file_requires(workdir: Path) -> None:
    assert main(["init-env"]) == 0
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required, "docker-compose.yml requires its secrets with ${VAR:?message}"
    assert required <= set(values(workdir / ".env")), sorted(required - set(values(workdir / ".env")))


def test_config_check_prints_one_line_per_problem(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / ".env").write_text(
        "OPTIMUM_ENVIRONMENT=production\nBRIDGE_MAX_ATTEMPTS=0\nOPTIMUM_RATE_LIMIT=lots\nOPTIMUM_CLIENT_SECRET=hunter2-secret\n"
    )
    assert main(["config", "check"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == ["OPTIMUM_RATE_LIMIT", "BRIDGE_MAX_ATTEMPTS"]
    assert all("hunter2" not in line for line in lines)


def test_config_check_names_what_a_real_environment_lacks(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / ".env").write_text("OPTIMUM_ENVIRONMENT=preprod\n")
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert "account default: OPTIMUM_CLIENT_ID: required" in err[0]
    assert "BRIDGE_CALLBACK_SECRET: not set" in err[1] and "BRIDGE_API_KEYS: not set" in err[2]


def test_the_sandbox_urls_apply_only_to_the_sandbox(workdir: Path) -> None:
    sandbox = load_settings(OPTIMUM_ENVIRONMENT="sandbox", OPTIMUM_SANDBOX_URL="http://sandbox:8090")
    assert (sandbox.api_url, sandbox.token_url) == ("http://sandbox:8090", "http://sandbox:8090/connect/token")
    for environment in ("preprod", "production"):
        real = load_settings(OPTIMUM_ENVIRONMENT=environment, OPTIMUM_SANDBOX_URL="http://sandbox:8090")
        assert (real.api_url, real.token_url) == ENDPOINTS[environment]
    # An empty override (an unset ${VAR:-} in a compose file) is no override.
    blank = load_settings(OPTIMUM_ENVIRONMENT="production", OPTIMUM_API_URL="", OPTIMUM_TOKEN_URL=" ")
    assert (blank.api_url, blank.token_url) == ENDPOINTS["production"]


@pytest.mark.parametrize("variable", ["OPTIMUM_TOKEN_URL", "OPTIMUM_API_URL"])
@pytest.mark.parametrize("environment", ["preprod", "production"])
def test_no_secret_travels_over_plain_http_outside_the_sandbox(workdir: Path, variable: str, environment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(**{"OPTIMUM_ENVIRONMENT": environment, variable: "http://sandbox:8090/connect/token"})
    message = str(refused.value)
    assert message == f"{variable}: must be https:// with OPTIMUM_ENVIRONMENT={environment} (http:// only for sandbox)"
    load_settings(**{"OPTIMUM_ENVIRONMENT": "sandbox", variable: "http://127.0.0.1:9/connect/token"})


def test_an_account_with_plain_http_urls_must_be_a_sandbox_one(workdir: Path) -> None:
    accounts = workdir / "accounts.toml"
    table = '[accounts.acme]\nclient_id = "c"\nclient_secret_env = "ACME_SECRET"\n'
    urls = 'api_url = "http://sandbox:8090"\ntoken_url = "http://sandbox:8090/connect/token"\n'
    accounts.write_text(table + 'environment = "production"\n' + urls)
    with pytest.raises(
        ConfigError, match=r"^BRIDGE_ACCOUNTS_FILE: accounts\.acme\.api_url: http:// only with environment"
    ):
        load_settings(BRIDGE_ACCOUNTS_FILE=str(accounts), environ={"ACME_SECRET": "s"})
    accounts.write_text(table + urls)  # no environment at all: not a sandbox either
    with pytest.raises(ConfigError, match="api_url: http:// only"):
        load_settings(BRIDGE_ACCOUNTS_FILE=str(accounts), environ={"ACME_SECRET": "s"})
    accounts.write_text(table + 'environment = "sandbox"\n')
    sandbox = load_settings(
        BRIDGE_ACCOUNTS_FILE=str(accounts), OPTIMUM_SANDBOX_URL="http://sandbox:8090", environ={"ACME_SECRET": "s"}
    )
    assert sandbox.accounts["acme"].token_url == "http://sandbox:8090/connect/token"


def test_a_sandbox_stack_without_its_simulator_says_so(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-env"]) == 0
    with (workdir / ".env").open("a") as env:
        env.write("OPTIMUM_SANDBOX_URL=http://sandbox.invalid:8090\n")  # a compose stack without --profile sandbox
    assert main(["config", "check"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "OPTIMUM_SANDBOX_URL: the simulator's host 'sandbox.invalid' does not resolve" in line
    assert "--profile sandbox" in line
