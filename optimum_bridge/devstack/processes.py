"""Child processes of the harness: started in their own session with a log file, stopped in bounded time.

A child in its own session does not get the terminal's Ctrl-C, so only the
parent sees it and stops its children in order. ``die_with_parent`` asks the
kernel (``PR_SET_PDEATHSIG``) to SIGTERM the child when the parent dies, even
by SIGKILL; it needs a ``preexec_fn``, so use it only where no other thread
of the parent forks meanwhile (the benchmarks).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
KILL_WAIT_S = 10.0


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, stdout and stderr to ``log_path``, stdin closed."""
    with log_path.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509  (see the docstring)
        )


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace_s: float = 15.0, signalled: bool = False
) -> int:
    """Send ``sig`` (unless already ``signalled``), wait up to ``grace_s``, then SIGKILL; the exit code."""
    if process.poll() is None:
        if not signalled:
            process.send_signal(sig)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %s still running %.0fs after signal %s: SIGKILL", process.pid, grace_s, sig)
            process.kill()
            process.wait(KILL_WAIT_S)
    return int(process.returncode)


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
