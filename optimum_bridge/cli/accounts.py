"""``optimum-bridge accounts add|list|show|rotate|set|remove|rekey`` (spec §12a): accounts at runtime from a shell.

Talks to Redis directly through ``accounts.store``, the same class as the HTTP
routes (no ingress needed). A secret is read from standard input
(``--secret-stdin``: never an argument, which ``ps`` and shell histories show),
and never printed: ``show`` prints the same JSON as ``GET /v1/accounts/{name}``,
with the secret's fingerprint.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import SecretStr, ValidationError

from optimum_bridge.accounts.cipher import SecretsCipher
from optimum_bridge.accounts.model import AccountPatch, AccountView, NewAccount
from optimum_bridge.accounts.removal import Removal
from optimum_bridge.accounts.store import MAX_PAGE, AccountConflict, AccountNotFound, AccountStore
from optimum_bridge.cli.commands import UsageError
from optimum_bridge.errors import BridgeError, first_problem
from optimum_bridge.keys import Keys
from optimum_bridge.process.redis import redis_client
from optimum_bridge.settings import Settings, load_settings


def add_account_commands(sub: Any) -> None:
    """The ``accounts`` subcommand and its actions."""
    accounts = sub.add_parser("accounts", help="add, list, show, rotate, change or remove accounts at runtime")
    actions = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create an account (its secret read from standard input)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--client-id", required=True)
    add.add_argument("--secret-stdin", action="store_true", required=True, help="read the client secret from stdin")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--environment", choices=("preprod", "production", "sandbox"))
    where.add_argument("--api-url")
    add.add_argument("--token-url")
    add.add_argument("--rate-limit", default="30/m")
    add.add_argument("--openapi-url")
    add.set_defaults(handler=cmd_accounts_add)
    actions.add_parser("list", help="one line per account").set_defaults(handler=cmd_accounts_list)
    show = actions.add_parser("show", help="an account as GET /v1/accounts/NAME shows it (JSON)")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=cmd_accounts_show)
    rotate = actions.add_parser("rotate", help="a new secret (from stdin): its token is dropped")
    rotate.add_argument("name", metavar="NAME")
    rotate.add_argument("--secret-stdin", action="store_true", required=True)
    rotate.set_defaults(handler=cmd_accounts_rotate)
    change = actions.add_parser("set", help="change an account's quota, client id or OpenAPI document")
    change.add_argument("name", metavar="NAME")
    change.add_argument("--rate-limit")
    change.add_argument("--client-id")
    change.add_argument("--openapi-url")
    change.set_defaults(handler=cmd_accounts_set)
    remove = actions.add_parser("remove", help="remove an account: its waiting jobs are cancelled")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=cmd_accounts_remove)
    actions.add_parser("rekey", help="encrypt every stored secret with the first BRIDGE_SECRETS_KEY").set_defaults(
        handler=cmd_accounts_rekey
    )


def _store(settings: Settings) -> AccountStore:
    cipher = SecretsCipher(settings.secrets_key)
    keys = Keys(settings.key_prefix)
    client = redis_client(settings)
    return AccountStore(client, keys, file=settings.accounts, cipher=cipher, sandbox_url=settings.sandbox_url)


def _secret() -> SecretStr:
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError("--secret-stdin: no secret on standard input")
    return SecretStr(value)


def _checked(model: type[NewAccount] | type[AccountPatch], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(first_problem(exc)) from None


def _named(call: Any, name: str) -> Any:
    try:
        return call()
    except AccountNotFound:
        raise BridgeError(f"no account {name!r}") from None
    except AccountConflict as exc:
        raise BridgeError(str(exc)) from None
    except ValidationError as exc:  # a change checked with the account's other fields
        raise UsageError(first_problem(exc)) from None


def line(view: AccountView) -> str:
    """One account in one line."""
    return (
        f"{view.name} ({view.source}): client {view.client_id}, {view.rate_limit}, {view.api_url}, "
        f"secret {view.secret_fingerprint or 'none'}"
    )


def cmd_accounts_add(args: argparse.Namespace, extra: list[str]) -> int:
    """Create an account."""
    settings = load_settings()
    fields = {
        "name": args.name,
        "client_id": args.client_id,
        "client_secret": _secret(),
        "environment": args.environment,
        "api_url": args.api_url,
        "token_url": args.token_url,
        "rate_limit": args.rate_limit,
        "openapi_url": args.openapi_url,
    }
    new: NewAccount = _checked(NewAccount, fields)
    store = _store(settings)
    if not store.cipher.configured:
        raise BridgeError("BRIDGE_SECRETS_KEY: set it (a Fernet key) to store accounts' secrets in Redis")
    print(line(_named(lambda: store.create(new), args.name)))
    return 0


def cmd_accounts_list(args: argparse.Namespace, extra: list[str]) -> int:
    """Every account, one line each, by name."""
    store = _store(load_settings())
    cursor: str | None = ""
    while cursor is not None:
        page = store.page(cursor=cursor, limit=MAX_PAGE)
        for view in page.accounts:
            print(line(view))
        cursor = page.next_cursor
    return 0


def cmd_accounts_show(args: argparse.Namespace, extra: list[str]) -> int:
    """One account as JSON."""
    store = _store(load_settings())
    print(_named(lambda: store.view(args.name), args.name).model_dump_json(indent=2))
    return 0


def _change(name: str, fields: dict[str, Any]) -> int:
    patch: AccountPatch = _checked(AccountPatch, fields)
    if patch.is_empty():
        raise UsageError("nothing to change: --rate-limit, --client-id or --openapi-url")
    store = _store(load_settings())
    print(line(_named(lambda: store.update(name, patch), name)))
    return 0


def cmd_accounts_rotate(args: argparse.Namespace, extra: list[str]) -> int:
    """A new secret: the account's token is dropped, the next call fetches one with it."""
    return _change(args.name, {"client_secret": _secret()})


def cmd_accounts_set(args: argparse.Namespace, extra: list[str]) -> int:
    """A new quota, client id or OpenAPI document."""
    return _change(
        args.name, {"rate_limit": args.rate_limit, "client_id": args.client_id, "openapi_url": args.openapi_url}
    )


def cmd_accounts_remove(args: argparse.Namespace, extra: list[str]) -> int:
    """Remove an account and cancel its waiting jobs."""
    settings = load_settings()
    store = _store(settings)
    _named(lambda: store.remove(args.name), args.name)
    keys = Keys(settings.key_prefix)
    cancelled = Removal(store._redis, keys, result_ttl_s=settings.result_ttl_s).cancel_waiting(args.name)
    print(f"{args.name}: removed; {cancelled} waiting job(s) cancelled")
    return 0


def cmd_accounts_rekey(args: argparse.Namespace, extra: list[str]) -> int:
    """Encrypt every stored secret again with the first key of ``BRIDGE_SECRETS_KEY``."""
    store = _store(load_settings())
    if not store.cipher.configured:
        raise BridgeError("BRIDGE_SECRETS_KEY: set it (the new key first, then the old ones) to rekey")
    print(f"{store.rekey()} account secret(s) encrypted with the first key")
    return 0
