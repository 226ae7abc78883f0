"""Accounts created at runtime, in Redis (spec §12a): one small hash each, a name index, a version.

The HTTP routes (``ingress.accounts``) and the CLI (``cli.accounts``) both go
through ``AccountStore``; workers read the same records through
``accounts.registry``. Every write bumps ``keys.accounts_version`` and records
the account's name at that version in ``keys.accounts_changes``, in the same
script, so a process learns what changed with one ``GET`` a second and reads
only the accounts that did. Accounts of the accounts file (and ``default``) are
listed beside them with ``"source": "file"`` and are never changed here.

Per idle account Redis holds the hash (about ten short fields: the secret
encrypted, its fingerprint, where it calls, its quota, two times) and one
entry in each of two sorted sets; the workers add its quota for the scripts
(an entry of the quotas hash, and its limiter state hash with that one
field); nothing else is created until it has work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
from pydantic import SecretStr

from optimum_bridge.accounts.cipher import SecretsCipher, fingerprint
from optimum_bridge.accounts.model import AccountPage, AccountPatch, AccountView, NewAccount, file_view
from optimum_bridge.accounts.record import Stored, members
from optimum_bridge.config.accounts import AccountFields, Accounts
from optimum_bridge.errors import BridgeError, ConfigError
from optimum_bridge.keys import Keys, text
from optimum_bridge.lua import scripts

#: Most accounts on one page of ``GET /v1/accounts``, and the default.
MAX_PAGE = 1000
DEFAULT_PAGE = 100
#: Accounts read per round trip when a process loads many.
CHUNK = 500
#: Keys per UNLINK when a removed account's shared reads are forgotten.
FORGET_BATCH = 500


class AccountNotFound(BridgeError):
    """No account of that name (or not one the key may see)."""


class AccountConflict(BridgeError):
    """The change cannot be made (an account of the file, a name taken, no ``BRIDGE_SECRETS_KEY``)."""


READ_ONLY = "account {name!r} comes from the accounts file: change it there"


def _now_ms() -> str:
    return str(int(time.time() * 1000))


class AccountStore:
    """Creates, lists, changes and removes runtime accounts; lists the file's beside them."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, file: Accounts, cipher: SecretsCipher, sandbox_url: str
    ) -> None:
        self._redis = client
        self._keys = keys
        self.file = file
        self.cipher = cipher
        self._sandbox_url = sandbox_url
        self._put = scripts.register(client, "account_put")
        self._remove = scripts.register(client, "account_remove")

    # -- reading ------------------------------------------------------------------------------------------

    def stored(self, name: str) -> Stored | None:
        """A runtime account's record (None: none of that name)."""
        return Stored.of(name, self._redis.hgetall(self._keys.account(name)))  # type: ignore[arg-type]  # bytes

    def stored_many(self, names: Iterable[str]) -> dict[str, Stored | None]:
        """Records of ``names``, read ``CHUNK`` at a time in one round trip each."""
        names = list(names)
        found: dict[str, Stored | None] = {}
        for start in range(0, len(names), CHUNK):
            chunk = names[start : start + CHUNK]
            with self._redis.pipeline(transaction=False) as pipe:
                for name in chunk:
                    pipe.hgetall(self._keys.account(name))
                replies = pipe.execute()
            found |= {name: Stored.of(name, raw) for name, raw in zip(chunk, replies, strict=True)}
        return found

    def names(self) -> list[str]:
        """Every runtime account's name, in order."""
        return members(self._redis.zrange(self._keys.accounts, 0, -1))

    def count(self) -> int:
        """How many runtime accounts there are."""
        return int(self._redis.zcard(self._keys.accounts))

    def exists(self, name: str) -> bool:
        """Whether ``name`` is an account, of the file or created at runtime."""
        return name in self.file or self._redis.zscore(self._keys.accounts, name) is not None

    def view(self, name: str) -> AccountView:
        """One account as the API shows it (``AccountNotFound``)."""
        if name in self.file:
            return self._file_view(name)
        stored = self.stored(name)
        if stored is None:
            raise AccountNotFound(name)
        return stored.view(sandbox_url=self._sandbox_url)

    def _file_view(self, name: str) -> AccountView:
        account = self.file[name]
        secret = account.client_secret.get_secret_value() if account.client_secret is not None else ""
        return file_view(account, fingerprint(secret) if secret else None)

    def page(self, *, cursor: str = "", limit: int = DEFAULT_PAGE, only: frozenset[str] | None = None) -> AccountPage:
        """The accounts after ``cursor`` by name, at most ``limit``; ``only``: those names alone (a limited key)."""
        limit = max(1, min(limit, MAX_PAGE))
        if only is not None:  # a few names: no walk through the index
            wanted = sorted(name for name in only if name > cursor)
            stored = self.stored_many(name for name in wanted if name not in self.file)
            present = [name for name in wanted if name in self.file or stored.get(name) is not None]
        else:
            start = f"({cursor}" if cursor else "-"
            runtime = members(self._redis.zrangebylex(self._keys.accounts, start, "+", start=0, num=limit + 1))
            present = sorted({*runtime, *(name for name in self.file.names if name > cursor)})
            stored = {}
        names, more = present[:limit], len(present) > limit
        stored |= self.stored_many(name for name in names if name not in self.file and name not in stored)
        views = []
        for name in names:
            record = stored.get(name)
            if name in self.file:
                views.append(self._file_view(name))
            elif record is not None:
                views.append(record.view(sandbox_url=self._sandbox_url))
        return AccountPage(accounts=views, next_cursor=names[-1] if more and names else None)

    # -- writing ------------------------------------------------------------------------------------------

    def _writable(self, name: str) -> None:
        if name in self.file:
            raise AccountConflict(READ_ONLY.format(name=name))

    def _encrypt(self, secret: SecretStr) -> str:
        try:
            return self.cipher.encrypt(secret)
        except ConfigError as exc:
            raise AccountConflict(str(exc)) from None

    def create(self, new: NewAccount) -> AccountView:
        """Store a new account (``AccountConflict`` if the name is taken or no key is set)."""
        self._writable(new.name)
        now = _now_ms()
        fields = {
            "client_id": new.client_id,
            "secret": self._encrypt(new.client_secret),
            "fp": fingerprint(new.client_secret.get_secret_value()),
            "environment": new.environment or "",
            "api_url": (new.api_url or "").rstrip("/"),
            "token_url": new.token_url or "",
            "openapi_url": new.openapi_url or "",
            "rate_limit": str(new.rate_limit),
            "created_ms": now,
            "updated_ms": now,
        }
        if self._redis.zscore(self._keys.accounts_removed, new.name) is not None:
            self.forget_answers(new.name)  # of a call of the removed account that finished since its removal
        if self._write(new.name, "create", fields, drop_token=True) == "exists":
            raise AccountConflict(f"account {new.name!r} exists: change it with PATCH /v1/accounts/{new.name}")
        return self.view(new.name)

    def update(self, name: str, patch: AccountPatch) -> AccountView:
        """Change an account (``AccountNotFound``, or ``AccountConflict`` for one of the file)."""
        self._writable(name)
        fields: dict[str, str] = {"updated_ms": _now_ms()}
        if patch.client_secret is not None:
            fields["secret"] = self._encrypt(patch.client_secret)
            fields["fp"] = fingerprint(patch.client_secret.get_secret_value())
        if patch.client_id is not None:
            fields["client_id"] = patch.client_id
        if patch.rate_limit is not None:
            fields["rate_limit"] = str(patch.rate_limit)
        if "openapi_url" in patch.model_fields_set:
            if patch.openapi_url:
                self._check_where(name, openapi_url=patch.openapi_url)
            fields["openapi_url"] = patch.openapi_url or ""
        drop = patch.client_secret is not None or patch.client_id is not None
        if self._write(name, "update", fields, drop_token=drop) == "missing":
            raise AccountNotFound(name)
        return self.view(name)

    def _check_where(self, name: str, **changes: str) -> None:
        """The account's place with ``changes`` checked by the rules it was created with (a ``ValidationError``
        naming the field: an ``http://`` document only for a sandbox account, say)."""
        stored = self.stored(name)
        if stored is None:
            raise AccountNotFound(name)
        f = stored.fields
        where = {field: f.get(field) or None for field in ("environment", "api_url", "token_url")}
        AccountFields.model_validate({"client_id": f["client_id"], **where, **changes})

    def _write(self, name: str, mode: str, fields: dict[str, str], *, drop_token: bool, if_secret: str = "") -> str:
        """Run ``account_put.lua``; ``if_secret``: write only if the record still holds that encrypted secret."""
        k = self._keys
        keys = [k.account(name), k.accounts, k.accounts_version, k.accounts_changes, k.accounts_removed, k.token(name)]
        pairs = [v for item in fields.items() for v in item]
        return text(self._put(keys=keys, args=[name, mode, "1" if drop_token else "0", if_secret, *pairs]))

    def remove(self, name: str) -> None:
        """Remove an account: no slot is given for it from now on (``AccountNotFound``, ``AccountConflict``).

        Its waiting jobs are cancelled by the caller (``accounts.removal.cancel_waiting``)."""
        self._writable(name)
        k = self._keys
        keys = [
            k.account(name),
            k.accounts,
            k.accounts_version,
            k.accounts_changes,
            k.accounts_removed,
            k.quotas,
            k.ready,
            k.openapi_due,
            k.token(name),
            k.limiter_log(name),
            k.limiter_state(name),
            k.limiter_pause(name),
            k.limiter_learned(name),
            k.limiter_tat(name),
            k.openapi(name),
            k.openapi_version(name),
            k.openapi_claim(name),
        ]
        if text(self._remove(keys=keys, args=[name])) == "missing":
            raise AccountNotFound(name)
        self.forget_answers(name)

    def forget_answers(self, name: str) -> int:
        """Drop the account's shared reads and fresh answers (spec §13); how many keys.

        Another customer may be created later under the same name: it must never join a call made with
        the removed account's credentials, nor be handed one of its answers (``max_age_s``). One ``SCAN``
        of the keyspace, at a removal (and at the creation of a name removed before), never on a timer."""
        pattern = self._keys.read(name, "*")  # names hold no glob character (schemas.ACCOUNT_NAME)
        dropped, batch = 0, []
        for key in self._redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= FORGET_BATCH:
                dropped += int(self._redis.unlink(*batch))
                batch = []
        if batch:
            dropped += int(self._redis.unlink(*batch))
        return dropped

    def rekey(self) -> int:
        """Encrypt every stored secret again with the first key of ``BRIDGE_SECRETS_KEY``; how many."""
        done = 0
        for name, stored in self.stored_many(self.names()).items():
            if stored is not None and self.rekey_one(name, stored):
                done += 1
        return done

    def rekey_one(self, name: str, stored: Stored) -> bool:
        """Encrypt ``stored``'s secret again, unless the account changed since it was read; whether it was.

        The write is a compare-and-set on the encrypted secret read: a rotation in between is newer
        (already encrypted with the first key) and is kept, never overwritten by the old secret."""
        old = stored.fields["secret"]
        rotated = self.cipher.rotate(old, account=name)
        # Same secret, same client: the token stays (workers reread it and find nothing changed).
        return self._write(name, "update", {"secret": rotated}, drop_token=False, if_secret=old) not in {
            "missing",
            "changed",
        }
