"""``BRIDGE_REDIS_URL`` through Sentinel (spec §16): the URL, what Celery and kombu are given, no password shown.

The failover itself, with real sentinels, is in ``tests/integration/test_sentinel.py``.
"""

from __future__ import annotations

import pytest
from celery import Celery
from kombu import Connection
from kombu.transport.redis import SentinelChannel

from optimum_bridge.errors import ConfigError
from optimum_bridge.process import kombu_worker as broker
from optimum_bridge.process.redis import broker_connection, parse_sentinel_url
from optimum_bridge.settings import Settings, load_settings

SENTINEL_URL = "redis+sentinel://:data%40pw@10.0.0.1:26379,[::1]:26380,sentinel-3/bridge/2"


def settings(url: str, **env: str) -> Settings:
    return load_settings(BRIDGE_REDIS_URL=url, environ={}, **env)


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    target = parse_sentinel_url(SENTINEL_URL)
    assert target.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert (target.service, target.db, target.username) == ("bridge", 2, None)
    assert target.password is not None and target.password.get_secret_value() == "data@pw"
    assert parse_sentinel_url("redis+sentinel://h:1/svc").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "SERVICE[/DB]"),
        ("redis+sentinel://h1:26379/", "SERVICE[/DB]"),
        ("redis+sentinel://h1:70000/svc", "HOST:PORT"),
        ("redis+sentinel://:secret-pw@/svc", "HOST:PORT"),
        ("redis+sentinel://h1:1/svc/zero", "must be a number"),
        ("redis+sentinel://h1:1/svc/0/extra", "SERVICE[/DB]"),
        ("redis+sentinel://secret-pw@h1:1/svc", ":PASSWORD@"),
        ("sentinel://h1:1/svc", "redis+sentinel://"),
    ],
)
def test_a_bad_url_is_one_line_naming_the_variable_without_the_password(url, message):
    with pytest.raises(ConfigError) as caught:
        settings(url)
    text = str(caught.value)
    assert text.startswith("BRIDGE_REDIS_URL: ") and message in text and "\n" not in text
    assert "secret-pw" not in text


def test_no_password_shows_in_the_settings_or_the_broker_banner():
    s = settings(SENTINEL_URL, BRIDGE_REDIS_SENTINEL_PASSWORD="sentinel-pw")
    for shown in (repr(s), str(s), repr(parse_sentinel_url(SENTINEL_URL))):
        assert "data@pw" not in shown and "data%40pw" not in shown and "sentinel-pw" not in shown
    url, _ = broker_connection(s)
    assert "data%40pw" not in Connection(url).as_uri()  # what Celery's banner prints


def test_celery_gets_kombus_sentinel_transport_with_both_passwords():
    s = settings(SENTINEL_URL, BRIDGE_REDIS_SENTINEL_PASSWORD="sentinel-pw")
    url = broker.broker_url(s)
    options = broker.transport_options(s)
    assert url.split(";") == [
        "sentinel://:data%40pw@10.0.0.1:26379/2",
        "sentinel://:data%40pw@[::1]:26380/2",
        "sentinel://:data%40pw@sentinel-3:26379/2",
    ]
    assert options["master_name"] == "bridge" and options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert options["global_keyprefix"] == s.key_prefix
    connection = Connection(url, transport_options=options)
    assert connection.transport_cls == "sentinel" and connection.password == "data@pw"
    assert connection.virtual_host == "2"
    assert set(options) <= set(SentinelChannel.from_transport_options)


def test_a_plain_url_is_unchanged_for_celery():
    s = settings("redis://:pw@localhost:6380/3")
    assert broker_connection(s) == ("redis://:pw@localhost:6380/3", {})
    assert broker.broker_url(settings("unix:///run/redis.sock")) == "redis+socket:///run/redis.sock"


def test_celery_censors_both_passwords_where_it_shows_its_configuration():
    """``celery inspect conf`` and ``celery report`` show ``humanize(censored=True)``; the banner ``as_uri``."""
    s = settings(SENTINEL_URL, BRIDGE_REDIS_SENTINEL_PASSWORD="sentinel-pw")
    app = Celery("censored", set_as_current=False)
    app.conf.update(broker_url=broker.broker_url(s), broker_transport_options=broker.transport_options(s))
    shown = app.conf.humanize(with_defaults=False, censored=True) + app.connection_for_read().as_uri()
    assert "master_name" in shown and "sentinel_kwargs" in shown
    for secret in ("sentinel-pw", "data@pw", "data%40pw"):
        assert secret not in shown
