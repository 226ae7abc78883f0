"""Everything the bridge assumes about kombu's and Celery's internals, listed in one place.

The bridge writes Celery messages straight into Redis (one Lua call submits a
batch) and reads kombu's own bookkeeping, so it depends on details that are
not public API. Each is listed here, and ``tests/integration/test_broker_contract.py``
compares them with what the pinned kombu and Celery (``pyproject.toml``)
actually do, so an upgrade that changes one fails the suite instead of losing
messages in production; ``tests/integration/test_broker_failover.py`` checks
that they still hold on a replica promoted by Sentinel. Items 1 and 2, what a
producer and the dispatch need too, are here; items 3 to 6, what only a worker's
consumer needs, are in ``process.kombu_worker``:

1. **The message in a queue list** (``build_message``, and ``message_template``
   for the messages ``lua/dispatch.lua`` builds): kombu's Redis transport
   ``LPUSH``es a JSON object ``{body, content-encoding, content-type, headers,
   properties}`` to the list named by the queue (with ``global_keyprefix`` in
   front); the body is base64 of Celery protocol 2's ``[args, kwargs, embed]``;
   ``properties`` carries ``delivery_info`` (exchange, routing key),
   ``delivery_tag``, ``body_encoding`` and the headers Celery computes per task
   (taken from Celery itself, once).
2. **The unacked record** (``unacked_message``): a message a worker holds is
   in the hash ``<prefix>unacked`` as ``[message, exchange, routing_key]``.
3. **The pop-then-record gap** (``kombu_worker.record_unacked_step``): kombu pops with
   ``BRPOP`` and then records the message as unacked through the channel's
   ``QoS.append``, in a second round trip; the consumer step wraps that method,
   and ``QoS.ack``/``reject``/``restore_unacked``, which a message taken before a
   failover calls through a transport already without its client (``tolerant``).
4. **Transport options** (``kombu_worker.transport_options``): ``global_keyprefix``,
   ``visibility_timeout``, ``unacked_restore_interval``/``_throttle``,
   ``redis+socket://`` as kombu's name for a Unix socket, and for a
   Sentinel-managed Redis ``sentinel://`` URLs joined by ``;`` with
   ``master_name`` and ``sentinel_kwargs`` (built in ``process.redis``).
5. **The consumer's heartbeat** (``kombu_worker.watch_consumer_step``): kombu reads every
   answer to its ``BRPOP`` through ``channel.handlers["BRPOP"]``, raising
   ``queue.Empty`` when the one-second ``brpop_timeout`` passed, and asks for
   no message while ``channel.qos.can_consume()`` is false (``watchdog``).
6. **Reconnecting** (``kombu_worker.consumer_class``): Celery's consumer reconnects through
   ``Connection.ensure_connection`` with kombu's default intervals; ours are shorter.

Celery is imported only where it is used, so a producer, which builds no
message, never imports it.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from typing import Any

from optimum_bridge.keys import DELIVER_BATCH_TASK, DELIVER_TASK, EXECUTE_TASK

# -- 1. the message in a queue list -----------------------------------------------------------


@functools.cache
def _static_parts(task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Celery's own headers, properties and embed for ``task`` (built once; per-message fields replaced)."""
    from celery import Celery  # noqa: PLC0415 - Celery only in workers: producers build messages too

    builder = Celery("optimum_bridge.process.kombu", set_as_current=False)
    headers, properties, body, _ = builder.amqp.as_task_v2("0", task, args=[], kwargs={})
    return headers, properties, body[2]


def prepare() -> None:
    """Build every task's static parts now, in the calling thread.

    Building them makes a Celery app and reads its ``amqp`` and ``conf``, whose
    ``cached_property`` locks are class-wide: a background thread caught doing
    it as the prefork pool forks would leave them locked in every child (the
    worker calls this before its upkeep thread starts).
    """
    for task in (EXECUTE_TASK, DELIVER_TASK, DELIVER_BATCH_TASK):
        _static_parts(task)


def _message(task: str, queue: str, *, task_id: str, tag: str, argsrepr: str, body: str) -> str:
    static_headers, static_properties, _ = _static_parts(task)
    headers = {**static_headers, "id": task_id, "root_id": task_id, "argsrepr": argsrepr}
    message = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **static_properties,
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    }
    return json.dumps(message, separators=(",", ":"))


def build_message(task: str, args: list[Any], *, queue: str) -> str:
    """A Celery task message exactly as kombu's Redis transport stores it in a queue list."""
    task_id = str(uuid.uuid4())
    payload = json.dumps([args, {}, _static_parts(task)[2]], separators=(",", ":")).encode()
    body = base64.b64encode(payload).decode()
    return _message(task, queue, task_id=task_id, tag=str(uuid.uuid4()), argsrepr=repr(args), body=body)


def message_template(task: str, *, queue: str) -> tuple[str, str]:
    """The message of ``task`` with placeholders, and the body's embed, for ``lua/_message.lua``."""
    template = _message(task, queue, task_id="@ID@", tag="@TAG@", argsrepr="@ARGSREPR@", body="@BODY@")
    return template, json.dumps(_static_parts(task)[2], separators=(",", ":"))


def message_args(message: bytes | str | dict[str, Any], *, task: str) -> list[Any] | None:
    """The positional arguments of a ``task`` message, or None for any other message."""
    try:
        raw = message if isinstance(message, dict) else json.loads(message)
        if raw.get("headers", {}).get("task") != task:
            return None
        args = json.loads(base64.b64decode(raw["body"]))[0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return args if isinstance(args, list) else None


def job_id_of(message: bytes | str | dict[str, Any]) -> str | None:
    """The job id an execute message carries (its first argument), or None for anything else."""
    args = message_args(message, task=EXECUTE_TASK)
    return str(args[0]) if args else None


# -- 2. the unacked record --------------------------------------------------------------------


def unacked_message(record: bytes | str) -> dict[str, Any] | None:
    """The message of one entry of kombu's unacked hash (``[message, exchange, routing_key]``)."""
    try:
        message = json.loads(record)[0]
    except (ValueError, IndexError, TypeError, KeyError):
        return None
    return message if isinstance(message, dict) else None
