"""Redis work written once, run by a blocking or an asyncio client (sans-I/O).

A producer's reads and writes (submit, status and forecast, batches, cancel,
reprioritize) are generators of *steps*: each yields what to run in Redis --
a Lua script by name (``Script``), a command (``Command``), a pipeline
(``Pipeline``), or a blocking call such as a DNS lookup (``Blocking``) --
and is sent back its reply. ``SyncDriver`` runs them on a ``redis.Redis``,
``AsyncDriver`` on a ``redis.asyncio.Redis``; a step that fails is thrown
into its generator, which may handle it. ``BridgeClient`` and
``AsyncBridgeClient`` share every key, argument, script and parser, and
differ only in how they wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from optimum_bridge.lua import scripts
from optimum_bridge.process.replicas import UNREPLICATED, Replicas

if TYPE_CHECKING:
    import redis.asyncio
    from redis.commands.core import AsyncScript
    from redis.commands.core import Script as RedisScript

T = TypeVar("T")


@dataclass(frozen=True)
class Script:
    """Run ``lua/<name>.lua``: its reply is sent back.

    ``replicated``: an acknowledgement (a submission, a batch's seal), held until the driver's
    ``BRIDGE_REDIS_MIN_REPLICAS`` replicas have it (``process.replicas.Replicas``).
    """

    name: str
    keys: Sequence[str]
    args: Sequence[str | int | float]
    replicated: bool = False


@dataclass(frozen=True)
class Command:
    """One Redis command, e.g. ``Command("HGETALL", (key,))``: its parsed reply is sent back."""

    name: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    """Commands in one round trip (``transaction``: MULTI/EXEC): the list of their replies is sent back."""

    commands: tuple[Command, ...]
    transaction: bool = True


@dataclass(frozen=True)
class Blocking:
    """A call that blocks (a DNS lookup): the asyncio driver runs it in a thread; its result is sent back."""

    call: Callable[[], Any]


Step = Script | Command | Pipeline | Blocking
#: A generator of steps that returns a ``T``.
Steps = Generator[Step, Any, T]


@dataclass(frozen=True)
class _Finished:
    value: Any


def _advance(steps: Steps[Any], reply: Any, error: Exception | None) -> Step | _Finished:
    """The next step: ``steps`` sent the last reply, or thrown the last step's error."""
    try:
        return steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as finished:
        return _Finished(finished.value)


class SyncDriver:
    """Runs steps on a blocking ``redis.Redis``, each script registered once."""

    def __init__(self, client: redis.Redis, replicas: Replicas = UNREPLICATED) -> None:
        self.client = client
        self.replicas = replicas
        self._scripts: dict[str, RedisScript] = {}

    def __call__(self, steps: Steps[T]) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            step = _advance(steps, reply, error)
            if isinstance(step, _Finished):
                return step.value  # type: ignore[no-any-return]  # the generator's own return type
            try:
                reply, error = self._run(step), None
            except Exception as exc:  # the steps may handle it (a document openapi-core cannot read)
                reply, error = None, exc

    def _run(self, step: Step) -> Any:
        if isinstance(step, Script):
            if step.name not in self._scripts:
                self._scripts[step.name] = scripts.register(self.client, step.name)
            script = self._scripts[step.name]
            if step.replicated:
                return self.replicas.run(self.client, script, keys=list(step.keys), args=list(step.args))
            return script(keys=step.keys, args=step.args)
        if isinstance(step, Command):
            return self.client.execute_command(step.name, *step.args)  # type: ignore[no-untyped-call]  # redis-py
        if isinstance(step, Pipeline):
            with self.client.pipeline(transaction=step.transaction) as pipe:
                for command in step.commands:
                    pipe.execute_command(command.name, *command.args)  # type: ignore[no-untyped-call]  # redis-py
                return pipe.execute()
        return step.call()


class AsyncDriver:
    """Runs steps on a ``redis.asyncio.Redis``, each script registered once."""

    def __init__(self, client: redis.asyncio.Redis, replicas: Replicas = UNREPLICATED) -> None:
        self.client = client
        self.replicas = replicas
        self._scripts: dict[str, AsyncScript] = {}

    async def __call__(self, steps: Steps[T]) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            step = _advance(steps, reply, error)
            if isinstance(step, _Finished):
                return step.value  # type: ignore[no-any-return]  # the generator's own return type
            try:
                reply, error = await self._run(step), None
            except Exception as exc:  # the steps may handle it (a document openapi-core cannot read)
                reply, error = None, exc

    async def _run(self, step: Step) -> Any:
        if isinstance(step, Script):
            if step.name not in self._scripts:
                self._scripts[step.name] = self.client.register_script(scripts.source(step.name))
            script = self._scripts[step.name]
            if step.replicated and self.replicas.required:
                return await self.replicas.run_async(self.client, script, keys=list(step.keys), args=list(step.args))
            return await script(keys=step.keys, args=step.args)
        if isinstance(step, Command):
            return await self.client.execute_command(step.name, *step.args)  # type: ignore[no-untyped-call]  # redis-py
        if isinstance(step, Pipeline):
            async with self.client.pipeline(transaction=step.transaction) as pipe:
                for command in step.commands:
                    pipe.execute_command(command.name, *command.args)
                return await pipe.execute()
        return await asyncio.to_thread(step.call)
