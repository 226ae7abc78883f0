"""The ``optimum-bridge`` command: the bridge's processes, its work and its set-up, one subcommand each.

The products are ``worker``, ``api``, ``sandbox`` and ``demo``; the work is ``submit``, ``status``, ``cancel``,
``move``, ``batch``, ``dead-letters``, ``token``, ``quota``, ``schedules`` and ``accounts``; ``init-env`` and
``config check`` set a bridge up.

Exit codes: 0 success, 1 the operation failed or was refused, 2 bad usage or
configuration (a missing extra too). Errors are one line on stderr, never a traceback.
``products`` runs the bridge's products, ``commands`` submits and reads work,
``progress`` draws a batch's progress, ``quota`` prints each account's limiter. This package imports only the core at
load time: the commands that need an extra (``api``, ``sandbox``, ``demo``,
``worker --pool gevent``) import it when they run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis

from optimum_bridge.cli.accounts import add_account_commands
from optimum_bridge.cli.commands import (
    UsageError,
    cmd_batch_cancel,
    cmd_batch_status,
    cmd_batch_submit,
    cmd_cancel,
    cmd_dead_letters,
    cmd_move,
    cmd_status,
    cmd_submit,
    cmd_token,
)
from optimum_bridge.cli.config import cmd_config_check, cmd_init_env
from optimum_bridge.cli.products import (
    EXTRA_MODULES,
    MissingExtra,
    _split_pool,
    cmd_api,
    cmd_demo,
    cmd_sandbox,
    cmd_worker,
)
from optimum_bridge.cli.quota import cmd_quota
from optimum_bridge.cli.schedules import add_schedule_commands
from optimum_bridge.errors import BridgeError, ConfigError, JobNotFound
from optimum_bridge.jobs.batches import BatchNotFound
from optimum_bridge.keys import PRIORITIES
from optimum_bridge.producer import InvalidOperation

__all__ = ["EXTRA_MODULES", "MissingExtra", "UsageError", "_split_pool", "build_parser", "describe_failure", "main"]

Handler = Callable[[argparse.Namespace, list[str]], int]


def _fail(message: str, code: int = 1) -> int:
    print(f"optimum-bridge: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="optimum-bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = sub.add_parser("worker", help="run a Celery worker (extra args go to celery)", add_help=False)
    worker.set_defaults(handler=cmd_worker, passthrough=True)
    sandbox = sub.add_parser("sandbox", help="serve the simulated Optimum API", add_help=False)
    sandbox.set_defaults(handler=cmd_sandbox, passthrough=True)
    demo = sub.add_parser("demo", help="the whole bridge against the sandbox, with a summary", add_help=False)
    demo.set_defaults(handler=cmd_demo, passthrough=True)
    api = sub.add_parser("api", help="serve the HTTP ingress (BRIDGE_API_HOST:BRIDGE_API_PORT)")
    api.set_defaults(handler=cmd_api)

    submit = sub.add_parser("submit", help="submit one operation")
    submit.add_argument("method", help="GET, POST, PUT, PATCH or DELETE")
    submit.add_argument("path", help="path relative to the API base, e.g. /Vehicles")
    submit.add_argument("--query", action="append", default=[], metavar="K=V", help="query parameter (repeatable)")
    submit.add_argument("--json", metavar="JSON|@FILE", help="request body")
    submit.add_argument("--callback", metavar="URL", help="where to POST the signed outcome")
    submit.add_argument("--idempotency-key", metavar="KEY")
    submit.add_argument("--priority", choices=PRIORITIES, help="lane of the quota (default normal)")
    submit.add_argument("--not-before", metavar="ISO8601", help="do not start it earlier (UTC without an offset)")
    submit.add_argument(
        "--max-age", type=float, metavar="SECONDS", help="a GET may take an identical GET's answer this fresh"
    )
    submit.add_argument(
        "--no-coalesce", action="store_true", help="a GET makes its own call, even beside an identical one"
    )
    submit.add_argument("--wait", action="store_true", help="wait and print the outcome")
    submit.add_argument("--timeout", type=float, default=300.0, help="seconds to wait with --wait")
    submit.set_defaults(handler=cmd_submit)

    status = sub.add_parser("status", help="print a job's status")
    status.add_argument("job_id")
    status.set_defaults(handler=cmd_status)

    cancel = sub.add_parser("cancel", help="cancel a job that has not started its call")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=cmd_cancel)

    move = sub.add_parser("move", help="move a waiting job to another priority's lane, keeping its age")
    move.add_argument("job_id")
    move.add_argument("priority", choices=PRIORITIES)
    move.set_defaults(handler=cmd_move)

    _add_batch_commands(sub)

    dead = sub.add_parser("dead-letters", help="list or replay undeliverable callbacks")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("job_ids", nargs="*", help="replay only these jobs")
    dead.set_defaults(handler=cmd_dead_letters)

    token = sub.add_parser("token", help="token tools")
    token.add_argument("action", choices=["check"])
    token.set_defaults(handler=cmd_token)
    quota = sub.add_parser("quota", help="each account's quota: configured, learned and why, calls, pause")
    quota.set_defaults(handler=cmd_quota)
    add_schedule_commands(sub)
    add_account_commands(sub)
    _add_setup_commands(sub)
    return parser


def _add_setup_commands(sub: Any) -> None:
    init_env = sub.add_parser("init-env", help="write a first .env with fresh secrets (sandbox environment)")
    init_env.add_argument("--path", default=".env", help="where to write it (default .env)")
    init_env.add_argument("--force", action="store_true", help="replace an existing file")
    init_env.set_defaults(handler=cmd_init_env)
    config = sub.add_parser("config", help="configuration tools")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="load the settings and accounts; one line per problem, exit 2 if any")
    check.add_argument("--env-file", default=".env", help="the .env file to read besides the environment")
    check.set_defaults(handler=cmd_config_check)


def _add_batch_commands(sub: Any) -> None:
    batch = sub.add_parser("batch", help="submit a batch of operations, or read a batch's status")
    actions = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", help="submit a JSONL file (one operation per line) as one batch")
    submit.add_argument("file", metavar="FILE.jsonl")
    submit.add_argument("--callback", metavar="URL", help="where to POST the signed batch.completed event")
    submit.add_argument("--metadata", metavar="JSON|@FILE", help="a JSON object echoed in the batch's status")
    submit.add_argument("--wait", action="store_true", help="show progress, then print the final status")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait")
    submit.set_defaults(handler=cmd_batch_submit)
    status = actions.add_parser("status", help="print a batch's status")
    status.add_argument("batch_id", metavar="ID")
    status.set_defaults(handler=cmd_batch_status)
    cancel = actions.add_parser("cancel", help="cancel every waiting job of a batch")
    cancel.add_argument("batch_id", metavar="ID")
    cancel.set_defaults(handler=cmd_batch_cancel)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optimum-bridge`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = args.handler
    try:
        return handler(args, extra)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message, code = describe_failure(exc)
        return _fail(message, code)


# Expected failures, the first matching type wins: the prefix of their one line, and the exit code.
FAILURES: tuple[tuple[type[Exception], str, int], ...] = (
    (MissingExtra, "", 2),
    (UsageError, "", 2),
    (ConfigError, "configuration error: ", 2),
    (InvalidOperation, "invalid operation: ", 2),
    (BatchNotFound, "no batch ", 1),
    (JobNotFound, "no job ", 1),
    (BridgeError, "", 1),
    (TimeoutError, "", 1),
)


def describe_failure(exc: Exception) -> tuple[str, int]:
    """One line and an exit code for an expected failure; anything else is re-raised (a bug)."""
    for kind, prefix, code in FAILURES:
        if isinstance(exc, kind):
            return f"{prefix}{exc}", code
    if isinstance(exc, redis.RedisError):  # before OSError: redis's ConnectionError is one
        return f"cannot use Redis: {type(exc).__name__}: {exc}", 1
    if isinstance(exc, OSError):
        return str(exc), 1
    raise exc
