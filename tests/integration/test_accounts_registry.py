"""A worker's view of the accounts created at runtime (spec §12a), over real Redis: the registry reads only
what changed, the dispatcher's quotas follow a creation, a new rate limit and a removal, an unreadable secret
is left out (or stops a start), and an idle worker pays one GET a second whatever the number of accounts."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from optimum_bridge.accounts.cipher import SecretsCipher, SecretsKeyError
from optimum_bridge.accounts.follower import AccountsFollower
from optimum_bridge.accounts.model import AccountPatch, NewAccount
from optimum_bridge.accounts.registry import AccountRegistry
from optimum_bridge.accounts.removal import Removal
from optimum_bridge.accounts.store import AccountStore
from optimum_bridge.keys import Keys
from optimum_bridge.quota.rate import STATE_FIELD, RateLimit

KEY = Fernet.generate_key().decode()


def new(name: str, rate: str = "30/m") -> NewAccount:
    return NewAccount.model_validate(
        {"name": name, "client_id": f"{name}-client", "client_secret": f"{name}-secret", "environment": "sandbox",
         "rate_limit": rate}
    )  # fmt: skip


@pytest.fixture
def rt(bridge: Any) -> Any:
    runtime, _, _ = bridge(BRIDGE_SECRETS_KEY=KEY)
    return runtime


def test_the_dispatcher_follows_creation_quota_change_and_removal(rt: Any) -> None:
    store, keys = rt.account_store, rt.keys
    follower = AccountsFollower(rt)
    follower.run()
    assert "newco" not in rt.dispatcher.quotas
    store.create(new("newco", "6/s"))
    rt.registry.refresh(force=True)
    follower.run()
    quota = rt.dispatcher.quotas["newco"]
    assert quota.limit == 6
    assert rt.redis.hget(keys.quotas, "newco") == " ".join(map(str, quota.args())).encode()
    assert rt.accounts["newco"].limiter is not None and rt.executor  # parts built on demand
    store.update("newco", AccountPatch(rate_limit=RateLimit(2, 1.0)))
    rt.registry.refresh(force=True)
    follower.run()
    assert rt.dispatcher.quotas["newco"].limit == 2
    assert rt.accounts["newco"].account.rate_limit == RateLimit(2, 1.0)
    store.remove("newco")
    rt.registry.refresh(force=True)
    follower.run()
    assert "newco" not in rt.dispatcher.quotas and rt.redis.hget(keys.quotas, "newco") is None
    assert rt.registry.get("newco") is None and "newco" not in list(rt.accounts)


def test_the_registry_rereads_only_the_accounts_that_changed(rt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = rt.account_store
    for i in range(20):
        store.create(new(f"c{i:02d}"))
    registry = AccountRegistry(store)
    assert registry.load() == 20
    read: list[list[str]] = []
    original = store.stored_many

    def counting(names: Any) -> Any:
        names = list(names)
        read.append(names)
        return original(names)

    monkeypatch.setattr(store, "stored_many", counting)
    store.update("c07", AccountPatch(client_id="renamed"))
    store.create(new("c99"))
    assert registry.refresh(force=True)
    assert read == [["c07", "c99"]]
    account = registry.get("c07")
    assert account is not None and account.client_id == "renamed"
    assert not registry.refresh(force=True)  # nothing new: one GET


def test_an_unreadable_secret_is_left_out_or_stops_a_start(rt: Any) -> None:
    store = rt.account_store
    store.create(new("newco"))
    other = AccountStore(
        rt.redis,
        Keys(rt.settings.key_prefix),
        file=rt.settings.accounts,
        cipher=SecretsCipher(SecretStr(Fernet.generate_key().decode())),
        sandbox_url="",
    )
    with pytest.raises(SecretsKeyError, match=r"^BRIDGE_SECRETS_KEY: cannot decrypt the secret of account 'newco'"):
        AccountRegistry(other).load(strict=True)
    lenient = AccountRegistry(other)
    assert lenient.load() == 0 and lenient.get("newco") is None


def test_an_idle_registry_costs_one_get_a_second_whatever_the_accounts(rt: Any) -> None:
    store = rt.account_store
    for i in range(300):
        store.create(new(f"idle{i:03d}"))
    now = [0.0]
    registry = AccountRegistry(store, clock=lambda: now[0])
    registry.load()
    before = rt.redis.info("commandstats")
    for step in range(1, 11):
        now[0] = step * 0.5  # twenty calls over ten seconds
        registry.refresh()
        registry.names()
    after = rt.redis.info("commandstats")
    calls = {k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after}
    assert calls.get("cmdstat_get", 0) == 5 and sum(calls.values()) - calls.get("cmdstat_info", 0) <= 6


def test_the_upkeep_sweep_cancels_what_reaches_a_removed_account_late(bridge: Any) -> None:
    rt, client, _ = bridge(BRIDGE_SECRETS_KEY=KEY, BRIDGE_VALIDATE_OPERATIONS="off")
    rt.account_store.create(new("newco"))
    late = client.submit({"method": "GET", "path": "/Vehicles", "account": "newco"})
    rt.account_store.remove("newco")  # as if the job came after the removal's own cancel
    assert rt.removal.sweep() == 1
    status = client.get(late)
    assert status.status == "cancelled" and status.error is not None and status.error.kind == "account_removed"
    assert rt.removal.sweep() == 0


def _commands(client: Any) -> dict[str, int]:
    return {name: stat["calls"] for name, stat in client.info("commandstats").items()}


def _spent(client: Any, before: dict[str, int]) -> int:
    after = _commands(client)
    return sum(calls - before.get(name, 0) for name, calls in after.items() if name != "cmdstat_info")


def test_the_removed_accounts_sweep_costs_one_command_a_round_once_nothing_waits(bridge: Any) -> None:
    rt, _, _ = bridge(BRIDGE_SECRETS_KEY=KEY)
    for i in range(20):
        rt.account_store.create(new(f"gone{i}"))
        rt.account_store.remove(f"gone{i}")
    redis = rt.redis
    one, other = (Removal(redis, rt.keys, result_ttl_s=60, quiet_s=3600) for _ in range(2))
    assert one.sweep() == 0
    before = _commands(redis)
    assert other.sweep() == 0  # another worker in the same round: the round is claimed, it skips it
    assert _spent(redis, before) <= 4  # EVALSHA, ZRANGE, SET (twenty removed accounts: ~100 before)
    assert redis.zcard(rt.keys.accounts_removed) == 20  # within the quiet time: still swept
    redis.delete(rt.keys.accounts_removed_claim)  # the next round
    quiet = Removal(redis, rt.keys, result_ttl_s=60, quiet_s=0, round_s=0.001)
    assert quiet.sweep() == 0  # past it, a round that finds nothing lets them go
    assert redis.zcard(rt.keys.accounts_removed) == 0
    before = _commands(redis)
    for _ in range(10):
        time.sleep(0.002)
        assert quiet.sweep() == 0
    assert _spent(redis, before) <= 25  # one script and its ZRANGE a round, whatever was removed


def test_a_retry_parked_after_the_removal_by_a_call_under_way_is_still_cancelled(bridge: Any) -> None:
    rt, client, _ = bridge(BRIDGE_SECRETS_KEY=KEY, BRIDGE_VALIDATE_OPERATIONS="off")
    keys, redis = rt.keys, rt.redis
    rt.account_store.create(new("newco"))
    job = client.submit({"method": "GET", "path": "/Vehicles", "account": "newco"})
    lane = next(lane for lane in keys.lanes("newco") if redis.zscore(lane, job) is not None)
    redis.zrem(lane, job)  # its call is under way when the account is removed
    redis.zadd(keys.leases, {job: 1})
    rt.account_store.remove("newco")
    removal = Removal(redis, keys, result_ttl_s=60, quiet_s=0, round_s=0.001)
    assert removal.sweep() == 0
    assert redis.zscore(keys.accounts_removed, "newco") is not None  # a call under way: still watched
    redis.zrem(keys.leases, job)  # the call ends and parks a retry
    redis.zadd(keys.delayed("newco"), {job: 1})
    time.sleep(0.002)
    assert removal.sweep() == 1
    status = client.get(job)
    assert status.status == "cancelled" and status.error is not None and status.error.kind == "account_removed"
    time.sleep(0.002)
    assert removal.sweep() == 0 and redis.zcard(keys.accounts_removed) == 0


def test_a_version_gone_back_makes_the_registry_read_everything_again(rt: Any) -> None:
    store, keys = rt.account_store, rt.keys
    store.create(new("kept"))
    store.create(new("lost"))
    registry = AccountRegistry(store)
    assert registry.load() == 2
    rt.redis.delete(keys.account("lost"))  # as a Redis restored from an older snapshot
    rt.redis.zrem(keys.accounts, "lost")
    rt.redis.set(keys.accounts_version, 1)
    assert registry.refresh(force=True)
    assert registry.get("lost") is None and registry.get("kept") is not None


def test_a_record_that_does_not_load_leaves_out_that_account_only(rt: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed record (written by hand, or by another version) does not stop the view from following."""
    store, keys = rt.account_store, rt.keys
    registry = AccountRegistry(store)
    registry.load()
    store.create(new("broken"))
    rt.redis.hdel(keys.account("broken"), "rate_limit")
    store.create(new("fine"))
    assert registry.refresh(force=True)
    assert registry.get("fine") is not None and registry.get("broken") is None
    assert "account 'broken': its record in Redis does not load" in caplog.text
    store.create(new("later"))
    assert registry.refresh(force=True) and registry.get("later") is not None, "later changes still apply"


def test_a_removed_account_gets_no_new_token(rt: Any) -> None:
    """A call under way when its account was removed finishes with the token it holds, and fetches no other."""
    from optimum_bridge.errors import TokenError
    from optimum_bridge.process.live_accounts import CurrentIdentity

    store = rt.account_store
    store.create(new("gone"))
    rt.registry.refresh(force=True)
    parts = rt.accounts["gone"]
    identity = CurrentIdentity(parts, parts.identity(parts.account))
    store.remove("gone")
    with pytest.raises(TokenError, match="'gone' was removed"):
        identity.fetch()


def test_a_removed_account_leaves_no_shared_read_or_answer_to_a_customer_created_later_under_its_name(rt: Any) -> None:
    """Spec §13's shared reads are per account name: a new customer named as a removed one must never join a
    call made with the old credentials, nor be handed one of its answers."""
    store, keys, client = rt.account_store, rt.keys, rt.redis
    store.create(new("acme"))
    store.create(new("acme-2"))
    theirs = [keys.read("acme", "d1"), keys.read("acme", "d1") + ":fresh", keys.fresh("acme", "d2")]
    others = [keys.read("acme-2", "d1"), keys.fresh("acme-2", "d1")]
    for key in theirs + others:
        client.set(key, "job:1")
    store.remove("acme")
    assert client.exists(*theirs) == 0
    assert client.exists(*others) == len(others), "only the removed account's"
    client.set(keys.fresh("acme", "d3"), "job:2")  # a call under way at the removal, finished since
    store.create(new("acme"))
    assert client.exists(keys.fresh("acme", "d3")) == 0


def test_a_removed_account_leaves_no_limiter_state(rt: Any) -> None:
    """The limiter state has no TTL (issue 17): it goes with its account, also when written after the removal."""
    store, keys, redis = rt.account_store, rt.keys, rt.redis
    follower = AccountsFollower(rt)
    follower.run()
    store.create(new("newco", "6/s"))
    rt.registry.refresh(force=True)
    follower.run()
    state = keys.limiter_state("newco")
    assert redis.hget(state, STATE_FIELD) == rt.dispatcher.quotas["newco"].stored().encode()  # published
    rt.accounts["newco"].limiter.pause(5)
    store.remove("newco")
    assert not redis.exists(state)
    redis.hset(state, STATE_FIELD, "6 1050 175.0 0.0")  # published again by a worker that had not seen the removal
    rt.registry.refresh(force=True)
    follower.run()
    assert not redis.exists(state)
    redis.hset(state, "h_limit", 3)  # a call under way at the removal finishes and says what its headers stated
    redis.zadd(keys.limiter_log("newco"), {"x": 1})
    time.sleep(0.002)
    assert Removal(redis, keys, result_ttl_s=60, quiet_s=0, round_s=0.001).sweep() == 0
    assert redis.zscore(keys.accounts_removed, "newco") is None  # the name let go, and its limiter with it
    assert not redis.exists(state, keys.limiter_log("newco"))
