"""The one definitions that several places used to repeat: each checked where it now lives."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, ValidationError

from optimum_bridge.config.accounts import AccountEntry
from optimum_bridge.errors import field_problems, first_problem
from optimum_bridge.jobs.status import shown_status
from optimum_bridge.keys import Keys
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.schemas import FINAL_STATES, JOB_STATES, WAITING_STATES
from optimum_bridge.settings import Settings, describe_each
from tests.support import ROOT


@pytest.mark.parametrize(
    ("status", "call", "shown"),
    [
        ("queued", "running", "running"),
        ("retrying", "running", "running"),
        ("queued", "queued", "queued"),
        ("queued", None, "queued"),
        ("succeeded", "running", "succeeded"),  # a finished follower stays finished
        ("cancelled", "running", "cancelled"),
    ],
)
def test_a_job_waiting_on_a_running_shared_call_shows_running(status, call, shown):
    assert shown_status(status, call) == shown


def test_the_state_sets_partition_the_states():
    assert set(JOB_STATES) == WAITING_STATES | FINAL_STATES | {"running"}
    assert not WAITING_STATES & FINAL_STATES


ENTRY = {"client_id": "c", "client_secret_env": "S", "environment": "preprod"}


class _Model(BaseModel):
    limit: int
    nested: dict[str, int]


def test_every_boundary_words_a_validation_error_the_same_way():
    with pytest.raises(ValidationError) as caught:
        _Model.model_validate({"limit": "many", "nested": {"a": "secret-value"}})
    problems = field_problems(caught.value.errors(include_input=False, include_url=False), prefix="body")
    assert [field for field, _ in problems] == ["body.limit", "body.nested.a"]
    assert "secret-value" not in repr(problems), "a value that failed is never echoed"
    assert first_problem(caught.value).startswith("limit: Input should be a valid integer")


def test_settings_name_the_variable_and_the_accounts_file_the_field():
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, OPTIMUM_RATE_LIMIT="lots", BRIDGE_MAX_ATTEMPTS="0")  # type: ignore[call-arg]
    assert describe_each(caught.value) == [
        "OPTIMUM_RATE_LIMIT: expected N/s, N/m or N/h with N >= 1, got 'lots'",
        "BRIDGE_MAX_ATTEMPTS: Input should be greater than or equal to 1",
    ]
    with pytest.raises(ValidationError) as caught:
        AccountEntry.model_validate(
            {"client_id": "c", "client_secret_env": "S", "environment": "preprod", "rate_limit": "9/d"}
        )
    assert first_problem(caught.value) == "rate_limit: expected N/s, N/m or N/h with N >= 1, got '9/d'"


def test_one_rate_limit_type_parses_settings_and_accounts_alike():
    entry = AccountEntry.model_validate(
        {"client_id": "c", "client_secret_env": "S", "environment": "preprod", "rate_limit": "20/m"}
    )
    settings = Settings(_env_file=None, OPTIMUM_RATE_LIMIT="20/m")  # type: ignore[call-arg]
    assert entry.rate_limit == settings.rate_limit == RateLimit(20, 60.0)


def test_keys_name_job_records_and_read_batch_ids_back():
    keys = Keys("pfx:")
    assert keys.job("j1") == keys.job_prefix + "j1"
    assert keys.batch_id(keys.batch("b:with:colons")) == "b:with:colons"


def test_every_file_the_readme_map_names_exists():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("A newcomer's map:", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`([\w/]+\.(?:py|lua))`", section))
    assert len(named) > 15
    missing = [name for name in named if not (ROOT / "optimum_bridge" / name).exists() and not (ROOT / name).exists()]
    assert not missing
    assert "`keys.py`" in section and "`callbacks/signing.py`" in section
