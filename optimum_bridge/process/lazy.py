"""Fork-safe lazy attributes: the parts of a ``process.runtime.Runtime`` are built when first needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class lazy(Generic[T]):  # a decorator, named like the one it replaces
    """``functools.cached_property`` without its class-wide lock, which is not fork-safe.

    On Python 3.11 that lock is one per property *for every instance*: held by
    the upkeep thread as the prefork pool forks, it stays locked in the child,
    whose first task then hangs. Here a value is built under its owner's
    ``build_lock``, one per ``Runtime``: a forked child builds a new one.
    """

    def __init__(self, build: Callable[[Any], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> lazy[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> lazy[T] | T:
        if instance is None:
            return self
        cache = instance.__dict__
        if self.name not in cache:
            with instance.build_lock:  # type: ignore[attr-defined]
                if self.name not in cache:
                    cache[self.name] = self.build(instance)
        value: T = cache[self.name]
        return value
