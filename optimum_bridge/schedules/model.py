"""A schedule (spec §15): when it ticks, and the batch each tick submits; checked whole when saved.

Fields: ``cron`` (5 fields) with ``timezone`` (IANA, default UTC), or
``every`` (``"30s"``, ``"15m"``, ``"1h"``); ``account``; ``priority`` (default
``bulk``); the batch's ``callback`` and ``metadata``; ``missed`` and
``overlap`` policies; and either ``operations`` (templates) or ``source`` (one
operation run first) with ``for_each`` (JMESPath over its JSON answer) and
``operation`` (one template, once per item). Saving renders every template
for a tick now, against ``sample_item`` for ``operation``, and checks the
result as an ``Operation``: a template that would fail at 2 a.m. is refused
now, in one line naming it (``operation.query.startDate: 'tik' is undefined``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jmespath
from cronsim import CronSim, CronSimError
from jmespath.exceptions import JMESPathError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from optimum_bridge.config.accounts import Accounts
from optimum_bridge.errors import ConfigError, first_problem
from optimum_bridge.schedules.templates import OperationTemplate, TemplateFailed
from optimum_bridge.schedules.ticks import Ticks, parse_every
from optimum_bridge.schemas import ACCOUNT_NAME, MAX_BATCH_OPERATIONS, Callback, Operation, Priority, ShortText

#: A schedule's name: it appears in Redis keys and URLs (``/v1/schedules/{name}:run``, hence no colon).
SCHEDULE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
ScheduleName = Annotated[str, StringConstraints(pattern=SCHEDULE_NAME)]
Template = dict[ShortText, JsonValue]


class Schedule(BaseModel):
    """One schedule, as the accounts file's ``[schedules.NAME]`` or ``PUT /v1/schedules/{name}`` give it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = Field(None, description="5 fields, in `timezone`")
    timezone: str = Field("UTC", description="IANA zone of `cron` and of the templates' datetimes")
    every: str | None = Field(None, description='a period: "30s", "15m", "1h"')
    account: Annotated[str, StringConstraints(pattern=ACCOUNT_NAME)] = "default"
    priority: Priority = "bulk"
    callback: Callback | None = Field(None, description="where each run's one `batch.completed` goes")
    metadata: dict[ShortText, JsonValue] = Field(default_factory=dict, max_length=48)
    missed: Literal["skip", "latest"] = Field("skip", description="ticks that fell while no worker ran")
    overlap: Literal["skip", "queue"] = Field("skip", description="a tick whose previous batch still runs")
    operations: list[Template] | None = Field(None, min_length=1, max_length=MAX_BATCH_OPERATIONS)
    source: Template | None = Field(None, description="one operation run first; `for_each` reads its answer")
    for_each: str | None = Field(None, description="JMESPath over the source's JSON answer: the items")
    operation: Template | None = Field(None, description="submitted once per item (`{{ item }}`)")
    sample_item: JsonValue = Field("AB-123-CD", description="the `item` that `operation` is checked with when saved")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value.split()) != 5:
            raise ValueError(f"{value!r}: expected 5 fields (minute hour day month weekday)")
        try:
            CronSim(value, datetime.now(UTC))
        except CronSimError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return " ".join(value.split())

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Paris)") from None
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        if value is not None:
            parse_every(value)
        return value

    @field_validator("for_each")
    @classmethod
    def _for_each(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                jmespath.compile(value)
            except JMESPathError as exc:
                raise ValueError(f"not a JMESPath expression ({' '.join(str(exc).split())})") from None
        return value

    @model_validator(mode="after")
    def _whole(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("cron: give cron (with timezone) or every, one of them")
        fan_out = (self.source, self.for_each, self.operation)
        if self.operations is None and any(part is None for part in fan_out):
            raise ValueError("operations: give operations, or source with for_each and operation")
        if self.operations is not None and any(part is not None for part in fan_out):
            raise ValueError("operations: give operations, or source with for_each and operation, not both")
        try:
            self._check_templates()
        except TemplateFailed as exc:
            raise ValueError(str(exc)) from None
        return self

    def _check_templates(self) -> None:
        """Render every template for a tick now (``sample_item`` as the item) and check the operations."""
        tick = self.ticks.after(datetime.now(UTC))
        previous = self.ticks.before(tick)
        if self.operations is not None:
            self.render_operations(tick, previous)
            return
        self.render_source(tick, previous)
        self.render_items(tick, previous, [self.sample_item])

    @cached_property
    def ticks(self) -> Ticks:
        """When it ticks."""
        every_s = parse_every(self.every) if self.every is not None else None
        return Ticks(ZoneInfo(self.timezone), cron=self.cron, every_s=every_s)

    @property
    def fans_out(self) -> bool:
        """Whether a tick runs ``source`` first, then one ``operation`` per item."""
        return self.source is not None

    def render_operations(self, tick: datetime, previous: datetime) -> list[Operation]:
        """``operations`` for a tick (``TemplateFailed`` naming ``operations[i]...``)."""
        templates = self.operations or []
        context = self._context(tick, previous)
        return [
            self._operation(OperationTemplate(t, where=f"operations[{i}]").render(context), f"operations[{i}]")
            for i, t in enumerate(templates)
        ]

    def render_source(self, tick: datetime, previous: datetime) -> Operation:
        """``source`` for a tick."""
        template = OperationTemplate(self.source or {}, where="source")
        return self._operation(template.render(self._context(tick, previous)), "source")

    def render_items(self, tick: datetime, previous: datetime, items: list[Any]) -> list[Operation]:
        """``operation`` once per item."""
        template = OperationTemplate(self.operation or {}, where="operation")
        context = self._context(tick, previous)
        return [self._operation(template.render({**context, "item": item}), "operation") for item in items]

    def items(self, answer: Any) -> list[Any]:
        """The items ``for_each`` selects in the source's answer (none when it selects nothing)."""
        found = jmespath.search(self.for_each or "@", answer)
        if found is None:
            return []
        return found if isinstance(found, list) else [found]

    def _context(self, tick: datetime, previous: datetime) -> dict[str, Any]:
        return {"tick": self.ticks.local(tick), "previous_tick": self.ticks.local(previous)}

    def _operation(self, rendered: dict[str, Any], where: str) -> Operation:
        if rendered.setdefault("account", self.account) != self.account:
            raise TemplateFailed(f"{where}.account: the schedule's account is {self.account!r}")
        rendered.setdefault("priority", self.priority)
        try:
            return Operation.model_validate(rendered)
        except ValidationError as exc:
            raise TemplateFailed(first_problem(exc, prefix=where)) from None


def file_schedules(accounts: Accounts) -> dict[str, Schedule]:
    """The accounts file's ``[schedules.NAME]``, checked whole; ``ConfigError`` in one line naming the field."""
    found = {}
    for name, table in accounts.schedules.items():
        where = f"BRIDGE_ACCOUNTS_FILE: schedules.{name}"
        if not re.fullmatch(SCHEDULE_NAME, name):
            raise ConfigError(f"{where}: the name must match {SCHEDULE_NAME}")
        try:
            schedule = Schedule.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(f"{where}.{first_problem(exc)}") from None
        if schedule.account not in accounts:
            raise ConfigError(f"{where}.account: unknown account {schedule.account!r}")
        found[name] = schedule
    return found
