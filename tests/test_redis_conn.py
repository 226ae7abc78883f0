"""``BRIDGE_REDIS_URL`` through Sentinel (spec §16): the URL, the clients and broker built from it, a failover.

The fast tests check the URL and what is built from it, and that no password
shows; the others run a primary, two replicas and three sentinels on loopback
(``harness.sentinel``) and see a client, and kombu's Sentinel transport, find
the promoted replica after the primary is SIGKILLed.
"""

from __future__ import annotations

import logging

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from optimum_bridge import broker
from optimum_bridge.errors import ConfigError
from optimum_bridge.redis_conn import broker_connection, check_eviction_policy, parse_sentinel_url, redis_client
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
    from kombu.transport.redis import SentinelChannel

    assert set(options) <= set(SentinelChannel.from_transport_options)


def test_a_plain_url_is_unchanged_for_celery():
    s = settings("redis://:pw@localhost:6380/3")
    assert broker_connection(s) == ("redis://:pw@localhost:6380/3", {})
    assert broker.broker_url(settings("unix:///run/redis.sock")) == "redis+socket:///run/redis.sock"


def test_clients_follow_a_failover_through_the_sentinels(sentinel_group, caplog):
    group = sentinel_group(password="data-pw", sentinel_password="sentinel-pw")
    s = settings(group.url, BRIDGE_REDIS_SENTINEL_PASSWORD="sentinel-pw")
    client = redis_client(s)
    connection = Connection(broker.broker_url(s), transport_options=broker.transport_options(s))
    queue = Queue("q", Exchange("q"), routing_key="q")
    try:
        client.set("k", "before")
        old = group.kill_primary()
        # The same client, on its next command, asks the sentinels again and writes to the new primary.
        assert client.set("k", "after")
        new = group.wait_promoted(old.port)
        assert group.data_client(new).get("k") == b"after"
        Producer(connection.channel()).publish({"n": 1}, exchange=queue.exchange, routing_key="q", declare=[queue])
        received = []
        with Consumer(
            connection.channel(), queues=[queue], callbacks=[lambda body, m: (received.append(body), m.ack())]
        ):
            connection.drain_events(timeout=10)
        assert received == [{"n": 1}]
        assert group.data_client(new).llen(f"{s.key_prefix}q") == 0  # through the prefix, on the new primary
        with caplog.at_level(logging.WARNING):
            assert check_eviction_policy(client) == "noeviction"
        assert not caplog.records
    finally:
        connection.release()
        client.close()


def test_an_evicting_redis_gets_one_warning(private_redis, caplog):
    server = private_redis("--maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, logger="optimum_bridge.redis_conn"):
        assert check_eviction_policy(server.client()) == "allkeys-lru"
    assert [r.getMessage() for r in caplog.records] == [
        "redis: maxmemory-policy is allkeys-lru, not noeviction: under memory pressure Redis would drop queued jobs"
    ]


def test_a_redis_refusing_config_gets_one_line_saying_so(private_redis, caplog):
    server = private_redis("--rename-command", "CONFIG", "")
    with caplog.at_level(logging.WARNING, logger="optimum_bridge.redis_conn"):
        assert check_eviction_policy(server.client()) is None
    assert [r.getMessage() for r in caplog.records] == [
        "redis: could not check maxmemory-policy (CONFIG GET refused); it must be noeviction"
    ]
