"""The Lua scripts: one ``.lua`` file each in ``optimum_bridge/lua/``, read once, registered per client.

Every script is run with a shared prelude (``lua/_prelude.lua``: the Redis-clock
time, the owner-checked release, ``is_final``, status changes that keep batch
counts) and with ``FIELD``, the job hash's field names generated from
``keys.JobField`` so they are declared once. A script whose first line is
``-- uses: limiter, message`` also gets those libraries (``lua/_limiter.lua``:
the quota's arithmetic; ``lua/_message.lua``: Celery messages built in Lua).
Each file documents at its top the keys and arguments it takes.
"""

from __future__ import annotations

import functools
from importlib import resources

import redis
from redis.commands.core import Script

from optimum_bridge.keys import JobField

_PACKAGE = "optimum_bridge.lua"


@functools.cache
def _prelude() -> str:
    fields = ", ".join(f"{field.name}='{field.value}'" for field in JobField)
    text = resources.files(_PACKAGE).joinpath("_prelude.lua").read_text()
    return f"local FIELD = {{{fields}}}\n{text}\n"


def _read(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(f"{name}.lua").read_text()


@functools.cache
def source(name: str) -> str:
    """The full text of script ``name`` (prelude and libraries included), read from the package once."""
    body = _read(name)
    first = body.splitlines()[0] if body else ""
    libraries = first.removeprefix("-- uses:").split(",") if first.startswith("-- uses:") else []
    return _prelude() + "".join(_read(f"_{library.strip()}") + "\n" for library in libraries) + body


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` bound to ``client`` (redis-py runs it by SHA, loading it on first miss)."""
    return client.register_script(source(name))
