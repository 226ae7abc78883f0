"""Schedules (spec §15), the fast tier: ticks with daylight saving time, templates, the model's one-line refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from optimum_bridge.config.accounts import Account, load_accounts
from optimum_bridge.errors import ConfigError, first_problem
from optimum_bridge.process.observability import secret_values
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.schedules.model import Schedule, file_schedules
from optimum_bridge.schedules.ticks import Ticks, parse_every
from optimum_bridge.settings import Settings

PARIS = ZoneInfo("Europe/Paris")
GET = {"method": "GET", "path": "/Vehicles"}


def _local(ticks: list[datetime]) -> list[str]:
    return [tick.astimezone(PARIS).isoformat() for tick in ticks]


@pytest.mark.parametrize(
    ("cron", "start", "expected"),
    [
        # Spring, 2027-03-28: 02:00-02:59 do not exist; both run at the first instant after, 03:00 CEST.
        (
            "0 2 * * *",
            datetime(2027, 3, 26, 12, tzinfo=UTC),
            ["2027-03-27T02:00:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-29T02:00:00+02:00"],
        ),
        (
            "30 2 * * *",
            datetime(2027, 3, 26, 12, tzinfo=UTC),
            ["2027-03-27T02:30:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00"],
        ),
        # Autumn, 2027-10-31: 02:00-02:59 occur twice; each runs once, at its first occurrence (CEST, +02:00).
        (
            "0 2 * * *",
            datetime(2027, 10, 29, 12, tzinfo=UTC),
            ["2027-10-30T02:00:00+02:00", "2027-10-31T02:00:00+02:00", "2027-11-01T02:00:00+01:00"],
        ),
        (
            "30 2 * * *",
            datetime(2027, 10, 29, 12, tzinfo=UTC),
            ["2027-10-30T02:30:00+02:00", "2027-10-31T02:30:00+02:00", "2027-11-01T02:30:00+01:00"],
        ),
    ],
)
def test_paris_dst_ticks(cron: str, start: datetime, expected: list[str]) -> None:
    assert _local(Ticks(PARIS, cron=cron).upcoming(start, 3)) == expected


def test_a_repeated_hour_runs_once_even_from_inside_it() -> None:
    ticks = Ticks(PARIS, cron="30 2 * * *")
    # 01:15 UTC is 02:15 CET, in the second pass of 02:xx: 02:30 already ran (at 00:30 UTC), not again.
    assert ticks.after(datetime(2027, 10, 31, 1, 15, tzinfo=UTC)) == datetime(2027, 11, 1, 1, 30, tzinfo=UTC)
    half_hourly = Ticks(PARIS, cron="*/30 * * * *").upcoming(datetime(2027, 10, 30, 23, 45, tzinfo=UTC), 4)
    assert _local(half_hourly) == [
        "2027-10-31T02:00:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T03:00:00+01:00",  # 02:00 and 02:30 CET (their second pass) are left out
        "2027-10-31T03:30:00+01:00",
    ]


def test_before_and_at_or_before_walk_back_over_the_changes() -> None:
    ticks = Ticks(PARIS, cron="30 2 * * *")
    assert ticks.before(datetime(2027, 11, 1, 1, 30, tzinfo=UTC)) == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    assert ticks.at_or_before(datetime(2027, 11, 1, 1, 30, tzinfo=UTC)) == datetime(2027, 11, 1, 1, 30, tzinfo=UTC)
    assert ticks.before(datetime(2027, 3, 29, tzinfo=UTC)) == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


def test_every_ticks_are_multiples_of_the_period() -> None:
    ticks = Ticks(ZoneInfo("UTC"), every_s=2)
    moment = datetime(2027, 1, 1, 0, 0, 10, 500000, tzinfo=UTC)
    assert ticks.after(moment) == datetime(2027, 1, 1, 0, 0, 12, tzinfo=UTC)
    assert ticks.before(moment) == datetime(2027, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert ticks.before(datetime(2027, 1, 1, 0, 0, 10, tzinfo=UTC)) == datetime(2027, 1, 1, 0, 0, 8, tzinfo=UTC)
    assert [parse_every(text) for text in ("30s", "15m", "1h")] == [30, 900, 3600]


NIGHTLY = {
    "cron": "0 2 * * *",
    "timezone": "Europe/Paris",
    "source": GET,
    "for_each": "[?status != 'OUT_FLEET'].registrationNumber",
    "operation": {
        "method": "GET",
        "path": "/Geolocation/Trips",
        "query": {
            "registrationNumber": "{{ item }}",
            "startDate": "{{ tick | date('%Y-%m-%d', days=-1) }}T00:00:00",
            "endDate": "{{ tick | date('%Y-%m-%d') }}T00:00:00",
        },
    },
}


def test_for_each_renders_one_operation_per_item_with_yesterdays_window() -> None:
    schedule = Schedule.model_validate(NIGHTLY)
    fleet = [
        {"registrationNumber": "AA-1", "status": "IN_FLEET"},
        {"registrationNumber": "BB-2", "status": "OUT_FLEET"},
    ]
    tick = datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 03:00 CEST, the spring change
    [operation] = schedule.render_items(tick, schedule.ticks.before(tick), schedule.items(fleet))
    assert operation.query == {
        "registrationNumber": "AA-1",
        "startDate": "2027-03-27T00:00:00",
        "endDate": "2027-03-28T00:00:00",
    }
    assert (operation.priority, operation.account) == ("bulk", "default")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"operation": {**GET, "query": {"d": "{{ tik }}"}}}, "operation.query.d: 'tik' is undefined"),
        ({"operation": {**GET, "query": {"d": "{{ tick "}}}, "operation.query.d: unexpected end of template"),
        ({"operation": {**GET, "query": {"d": "{{ item.__class__ }}"}}}, "operation.query.d: access to attribute"),
        ({"operation": {**GET, "path": "https://evil.example/{{ item }}"}}, "operation.path: "),
        ({"source": {**GET, "account": "other"}}, "source.account: the schedule's account is 'default'"),
        ({"cron": "0 2 * *"}, "cron: '0 2 * *': expected 5 fields"),
        ({"timezone": "Europe/Pariss"}, "timezone: 'Europe/Pariss' is not an IANA time zone"),
        ({"for_each": "[?"}, "for_each: not a JMESPath expression"),
        ({"every": "20s"}, "cron: give cron (with timezone) or every, one of them"),
        ({"operations": [GET]}, "operations: give operations, or source with for_each and operation, not both"),
        ({"missed": "all"}, "missed: Input should be 'skip' or 'latest'"),
    ],
)
def test_a_bad_schedule_is_refused_in_one_line_naming_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Schedule.model_validate({**NIGHTLY, **change})
    line = first_problem(caught.value)
    assert line.startswith(message), line
    assert "\n" not in line


def test_a_wrong_schedule_of_the_accounts_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[accounts.acme]\nclient_id = "acme"\nclient_secret_env = "ACME_SECRET"\nenvironment = "sandbox"\n\n'
        '[schedules.nightly]\ncron = "0 2 * * *"\naccount = "acme"\n'
        'operations = [{ method = "GET", path = "/Vehicles", query = { d = "{{ tik }}" } }]\n'
    )
    default = Account("default", None, None, "http://127.0.0.1:9", "http://127.0.0.1:9/token", RateLimit(30, 60.0))
    accounts = load_accounts(path, default=default, sandbox_url="http://127.0.0.1:9", environ={"ACME_SECRET": "s"})
    with pytest.raises(ConfigError) as caught:
        file_schedules(accounts)
    assert str(caught.value) == "BRIDGE_ACCOUNTS_FILE: schedules.nightly.operations[0].query.d: 'tik' is undefined"
    path.write_text(path.read_text().replace('account = "acme"', 'account = "beta"').replace("tik", "tick"))
    accounts = load_accounts(path, default=default, sandbox_url="http://127.0.0.1:9", environ={"ACME_SECRET": "s"})
    with pytest.raises(ConfigError, match=r"^BRIDGE_ACCOUNTS_FILE: schedules.nightly.account: unknown account 'beta'$"):
        file_schedules(accounts)


def test_admin_keys_are_secrets_never_shown() -> None:
    settings = Settings(_env_file=None, BRIDGE_ADMIN_KEYS="admin-key-0123, admin-key-4567")  # type: ignore[call-arg]
    assert [key.get_secret_value() for key in settings.admin_keys] == ["admin-key-0123", "admin-key-4567"]
    assert "admin-key-0123" not in repr(settings)
    assert {"admin-key-0123", "admin-key-4567"} <= set(secret_values(settings))  # scrubbed from logs and Sentry
