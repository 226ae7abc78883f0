"""How ``optimum-bridge batch submit --wait`` follows a running batch, showing its counts and forecast.

On a terminal, with ``rich`` installed (the ``demo`` extra), a progress bar;
otherwise (no ``rich``, or output to a pipe or a log) one plain line every
``PLAIN_EVERY_S`` seconds and one at the end. ``rich`` is imported only when a
bar is drawn, so the core never needs it.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any, Protocol

from optimum_bridge.clock import SYSTEM_CLOCK, Clock, isoformat
from optimum_bridge.schemas import BatchStatus

if TYPE_CHECKING:
    from optimum_bridge.producer import BridgeClient

#: Seconds between two plain progress lines.
PLAIN_EVERY_S = 2.0


def describe(status: BatchStatus) -> str:
    """One line: jobs done of the total, the counts by state, and the forecast while it runs."""
    counts = status.counts
    done = counts.succeeded + counts.failed
    line = (
        f"batch {status.id}: {done}/{status.total} done (succeeded {counts.succeeded}, failed {counts.failed}, "
        f"running {counts.running}, retrying {counts.retrying}, queued {counts.queued})"
    )
    if status.finished:
        return line
    forecast = isoformat(status.estimated_done_at) if status.estimated_done_at else "unknown"
    return f"{line}, estimated done at {forecast}"


class Progress(Protocol):
    """Something that shows a batch's successive statuses."""

    def update(self, status: BatchStatus) -> None:
        """Show ``status`` (the latest read)."""

    def close(self) -> None:
        """Stop showing progress."""


class PlainProgress:
    """One ``describe`` line every ``every_s`` seconds, and the final one."""

    def __init__(self, stream: IO[str], *, every_s: float = PLAIN_EVERY_S, clock: Clock = SYSTEM_CLOCK) -> None:
        self._stream = stream
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None

    def update(self, status: BatchStatus) -> None:
        """Print ``status`` when the last line is ``every_s`` old, or when the batch is done."""
        now = self._clock.monotonic()
        if status.finished or self._last is None or now - self._last >= self._every_s:
            print(describe(status), file=self._stream, flush=True)
            self._last = now

    def close(self) -> None:
        """Nothing to clean up."""


class RichProgress:
    """A ``rich`` progress bar of the final jobs, with the counts and the forecast beside it."""

    def __init__(self, rich_progress: Any) -> None:
        self._bar = rich_progress
        self._task: Any = None
        self._bar.start()

    def update(self, status: BatchStatus) -> None:
        """Move the bar to the jobs done so far."""
        counts = status.counts
        detail = f"ok {counts.succeeded} · failed {counts.failed} · running {counts.running} · queued {counts.queued}"
        if not status.finished and status.estimated_done_at is not None:
            detail += f" · done ≈ {status.estimated_done_at.strftime('%H:%M:%S')} UTC"
        done = counts.succeeded + counts.failed
        if self._task is None:
            self._task = self._bar.add_task(f"batch {status.id[:8]}", total=status.total, detail=detail)
        self._bar.update(self._task, completed=done, detail=detail)

    def close(self) -> None:
        """Draw the last state and release the terminal."""
        self._bar.stop()


def open_progress(stream: IO[str], *, clock: Clock = SYSTEM_CLOCK) -> Progress:
    """A bar when ``stream`` is a terminal and ``rich`` is installed, plain lines otherwise."""
    if stream.isatty():
        try:
            from rich.console import Console  # noqa: PLC0415 - rich is the demo extra's, optional
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - optional, as above
            from rich.progress import Progress as RichBar  # noqa: PLC0415 - optional, as above
        except ImportError:
            pass
        else:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            extra = (TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
            bar = RichBar(*columns, *extra, console=Console(file=stream), transient=False)
            return RichProgress(bar)
    return PlainProgress(stream, clock=clock)


def follow_batch(
    client: BridgeClient, batch_id: str, *, timeout: float, poll_s: float = 0.5, clock: Clock = SYSTEM_CLOCK
) -> BatchStatus:
    """Poll the batch until it is done, showing its progress on stderr; ``TimeoutError`` after ``timeout``."""
    deadline = clock.monotonic() + timeout
    progress = open_progress(sys.stderr, clock=clock)
    try:
        while True:
            status = client.get_batch(batch_id)
            progress.update(status)
            if status.finished:
                return status
            if clock.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} still running after {timeout:g}s")
            clock.sleep(min(poll_s, max(0.0, deadline - clock.monotonic())))
    finally:
        progress.close()
