"""The commands that submit and read work: ``submit``, ``status``, ``batch``, ``dead-letters``, ``token``.

Each is a thin layer over ``BridgeClient`` or the runtime.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimum_bridge.clock import SYSTEM_CLOCK
from optimum_bridge.errors import BridgeError, ConfigError
from optimum_bridge.producer import BridgeClient, InvalidOperation
from optimum_bridge.settings import load_settings


class UsageError(BridgeError):
    """An argument or an input file the command cannot use (exit 2)."""


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
    if args.not_before:
        operation["not_before"] = args.not_before
    if args.max_age is not None:
        operation["max_age_s"] = args.max_age
    if args.no_coalesce:
        operation["coalesce"] = False
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
    from optimum_bridge.cli.progress import follow_batch  # noqa: PLC0415 - rich only where a progress bar is drawn

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


def cmd_cancel(args: argparse.Namespace, extra: list[str]) -> int:
    """Cancel a job that has not started its call; print its status (exit 1 if its call is under way)."""
    with BridgeClient(load_settings()) as client:
        status = client.cancel(args.job_id)
    print(status.model_dump_json(indent=2))
    return 0


def cmd_move(args: argparse.Namespace, extra: list[str]) -> int:
    """Move a waiting job to another priority's lane, keeping its age; print its status (exit 1 once it runs)."""
    with BridgeClient(load_settings()) as client:
        status = client.reprioritize(args.job_id, args.priority)
    print(status.model_dump_json(indent=2))
    return 0


def cmd_batch_cancel(args: argparse.Namespace, extra: list[str]) -> int:
    """Cancel every waiting job of a batch; print the batch's status."""
    with BridgeClient(load_settings()) as client:
        status = client.cancel_batch(args.batch_id)
    print(status.model_dump_json(indent=2))
    return 0


def cmd_dead_letters(args: argparse.Namespace, extra: list[str]) -> int:
    """List or replay dead-lettered callbacks."""
    from optimum_bridge.process import runtime  # noqa: PLC0415 - a worker's wiring only for the commands that need it

    deliveries = runtime.install(load_settings()).deliveries
    if args.action == "list":
        for row in deliveries.dead_letters():
            print(json.dumps(row))
        return 0
    replayed = deliveries.replay(args.job_ids or None)
    print(f"replayed {len(replayed)} callback(s)")
    return 0


def cmd_token(args: argparse.Namespace, extra: list[str]) -> int:
    """Fetch or read each account's shared token and print its remaining lifetime (never the token)."""
    from optimum_bridge.process import runtime  # noqa: PLC0415 - a worker's wiring only for the commands that need it

    rt = runtime.install(load_settings())
    for name in rt.settings.accounts.names:  # the file's: a token for each of 10,000 runtime accounts is no check
        token = rt.accounts[name].tokens.get()
        remaining = token.expires_at - SYSTEM_CLOCK.time()
        print(f"{name}: token {token.fingerprint}: valid for {remaining:.0f}s more ({remaining / 86400:.1f} days)")
    return 0
