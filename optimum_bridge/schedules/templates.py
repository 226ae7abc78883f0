"""Operation templates (spec §15): every string of an operation, rendered in Jinja2's sandbox at each tick.

A template is an operation as JSON whose strings may use ``{{ tick }}``,
``{{ previous_tick }}`` (datetimes in the schedule's zone), ``{{ item }}``
(one item of ``for_each``) and the ``date`` filter
(``{{ tick | date('%Y-%m-%d', days=-1) }}``: strftime, optionally some days
earlier or later). Rendering runs in ``SandboxedEnvironment`` (no attribute
of Python internals, no import) with ``StrictUndefined``, so a misspelt name
fails when the schedule is saved instead of rendering empty at 2 a.m.
Templates are compiled once per schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import JsonValue

from optimum_bridge.errors import BridgeError


class TemplateFailed(BridgeError):
    """A template did not compile or render; the message names where, in one line."""


def _date(moment: object, fmt: str = "%Y-%m-%dT%H:%M:%S", days: int = 0) -> str:
    if not isinstance(moment, datetime):
        raise TemplateError(f"date: expects a datetime (tick, previous_tick), got {type(moment).__name__}")
    return (moment + timedelta(days=days)).strftime(fmt)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["date"] = _date
    return env


_ENV = _environment()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class OperationTemplate:
    """One operation template, its strings compiled once."""

    def __init__(self, template: Mapping[str, JsonValue], *, where: str) -> None:
        self.where = where
        self._compiled = self._compile(dict(template), where)

    def _compile(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            if "{" not in value:
                return value
            try:
                return _ENV.from_string(value)
            except TemplateError as exc:
                raise TemplateFailed(f"{where}: {_one_line(exc)}") from None
        if isinstance(value, dict):
            return {key: self._compile(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [self._compile(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return value

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The operation's JSON for ``context`` (``tick``, ``previous_tick``, ``item``)."""
        rendered: dict[str, Any] = self._render(self._compiled, context, self.where)
        return rendered

    def _render(self, value: Any, context: Mapping[str, Any], where: str) -> Any:
        if isinstance(value, Template):
            try:
                return value.render(context)
            except Exception as exc:  # any error of the template's own code: name it, one line
                raise TemplateFailed(f"{where}: {_one_line(exc)}") from None
        if isinstance(value, dict):
            return {key: self._render(item, context, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [self._render(item, context, f"{where}[{index}]") for index, item in enumerate(value)]
        return value
