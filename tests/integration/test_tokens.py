"""The token store against a real Redis: one refresh under contention, compare-and-delete."""

from __future__ import annotations

import threading
import time

from pydantic import SecretStr

from optimum_bridge.keys import Keys
from optimum_bridge.lua import scripts
from optimum_bridge.schemas import TokenResponse
from optimum_bridge.upstream.tokens import TokenStore


class Issuer:
    """A token endpoint stand-in that counts requests (the edge a unit test may fake)."""

    def __init__(self, delay: float = 0.0, lifetime: int = 3600) -> None:
        self.count = 0
        self.delay = delay
        self.lifetime = lifetime
        self.lock = threading.Lock()

    def fetch(self) -> TokenResponse:
        with self.lock:
            self.count += 1
            number = self.count
        time.sleep(self.delay)  # the identity server's latency, widening the race window
        return TokenResponse(access_token=SecretStr(f"token-number-{number}"), expires_in=self.lifetime)


def test_sixteen_threads_starting_cold_fetch_one_token(redis_server, prefix):
    issuer = Issuer(delay=0.2)
    stores = [TokenStore(redis_server.client(), Keys(prefix), issuer, poll_s=0.01) for _ in range(2)]
    barrier = threading.Barrier(16)
    seen: list[str] = []

    def get(store: TokenStore) -> None:
        barrier.wait()
        seen.append(store.get().value.get_secret_value())

    threads = [threading.Thread(target=get, args=(stores[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert issuer.count == 1
    assert set(seen) == {"token-number-1"}


def test_invalidate_drops_only_the_token_that_failed(redis_server, prefix):
    issuer = Issuer()
    store = TokenStore(redis_server.client(), Keys(prefix), issuer)
    old = store.get()
    assert store.invalidate(old)
    new = store.get()
    assert new.value.get_secret_value() == "token-number-2"
    # A late 401 for the old token must not throw away the newer one.
    assert not store.invalidate(old)
    assert store.get().fingerprint == new.fingerprint
    assert issuer.count == 2


def test_token_expires_before_its_lifetime_ends(redis_server, prefix):
    client = redis_server.client()
    store = TokenStore(client, Keys(prefix), Issuer(lifetime=100), refresh_margin_s=300)
    store.get()
    ttl_ms = client.pttl(Keys(prefix).token())
    assert 85_000 <= ttl_ms <= 90_000  # refreshed with a tenth of the lifetime to spare


def test_the_token_never_shows_in_repr(redis_server, prefix):
    token = TokenStore(redis_server.client(), Keys(prefix), Issuer()).get()
    assert "token-number" not in repr(token)
    assert "token-number" not in str(token)


class RotatedDuringFetch:
    """A runtime account's identity whose secret is rotated (``account_put.lua``) while its first fetch runs."""

    def __init__(self, client, keys: Keys, rotate) -> None:
        self.client, self.keys, self.rotate = client, keys, rotate
        self.used: list[str] = []

    def fetch_checked(self):
        secret = self.client.hget(self.keys.account("newco"), "fp").decode()  # the credentials stored now
        self.used.append(secret)
        if len(self.used) == 1:
            self.rotate()  # the rotation lands while the request with the old secret is in flight
        return TokenResponse(access_token=SecretStr(f"token-of-{secret}"), expires_in=3600), {
            "fp": secret,
            "client_id": "newco-client",
        }

    def fetch(self) -> TokenResponse:
        return self.fetch_checked()[0]


def test_a_token_fetched_with_a_secret_rotated_meanwhile_is_discarded_and_fetched_again(redis_server, prefix):
    client, keys = redis_server.client(), Keys(prefix)
    client.hset(keys.account("newco"), mapping={"fp": "old-fp", "client_id": "newco-client"})
    put = scripts.register(client, "account_put")

    def rotate() -> None:
        account_keys = [keys.account("newco"), keys.accounts, keys.accounts_version, keys.accounts_changes]
        put(
            keys=[*account_keys, keys.accounts_removed, keys.token("newco")],
            args=["newco", "update", "1", "", "fp", "new-fp"],
        )

    identity = RotatedDuringFetch(client, keys, rotate)
    store = TokenStore(client, keys, identity, account="newco", poll_s=0.01)
    assert store.get().value.get_secret_value() == "token-of-new-fp"
    assert identity.used == ["old-fp", "new-fp"]  # one request after the rotation
    cached = store.cached()
    assert cached is not None and cached.value.get_secret_value() == "token-of-new-fp"


def test_a_file_account_stores_its_token_without_a_record(redis_server, prefix):
    client, keys = redis_server.client(), Keys(prefix)
    store = TokenStore(client, keys, Issuer(), account="acme")
    assert store.get().value.get_secret_value() == "token-number-1"
    assert not client.exists(keys.account("acme")) and client.ttl(keys.token("acme")) > 3000
