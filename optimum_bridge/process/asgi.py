"""Serving an ASGI app with uvicorn: the ingress and the sandbox share one server that says when it listens.

uvicorn comes with the ``ingress`` and ``sandbox`` extras; a worker or a producer
never serves HTTP, so it is imported when a server is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import uvicorn


class Listening(Protocol):
    """A started server: its config, and the port it bound (useful with port 0)."""

    config: uvicorn.Config
    started: bool
    should_exit: bool
    server_state: Any  # uvicorn's ServerState: ``connections`` are the open ones

    def bound_port(self) -> int: ...

    def run(self, sockets: Any = None) -> None: ...


def listening_server(config: uvicorn.Config, on_started: Callable[[Listening], None]) -> Listening:
    """A ``uvicorn.Server`` that calls ``on_started(server)`` once it accepts connections."""
    import uvicorn  # noqa: PLC0415 - the ingress and sandbox extras' (see the module's docstring)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                on_started(self)

        def bound_port(self) -> int:
            port: int = self.servers[0].sockets[0].getsockname()[1]
            return port

    return cast("Listening", _Server(config))
