"""How every ``adasparse`` command ends: bad input as one line and status 2, bugs as tracebacks."""

from __future__ import annotations

import atexit
import os
import sys
from typing import Callable

from adasparse.errors import Interrupted, find_user_error

USAGE_ERROR = 2
INTERRUPTED = 130  # the shell's status for a command ended by SIGINT


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body. A :class:`adasparse.errors.UserError` — raised here or coming back
    wrapped from a Ray task or a Ray Train worker — becomes ``prog: message`` on stderr and exit
    status 2, never a traceback; any other exception propagates. ``body`` returns an exit
    status or None (= 0)."""
    try:
        status = body()
        if status is not None and not isinstance(status, int):
            raise TypeError(f"{prog}: the command's body returned {type(status).__name__}, not an exit status")
        return status or 0
    except Exception as err:
        found = find_user_error(err)
        if found is None:
            raise
        print(f"{prog}: {str(found).splitlines()[0] if str(found) else type(found).__name__}", file=sys.stderr)
        return INTERRUPTED if isinstance(found, Interrupted) else USAGE_ERROR


def exit_process(status: int) -> None:
    """End a command's process with ``status``. After Ctrl-C the process ends at once, without
    the interpreter's shutdown: the run's fit is still inside Ray in a thread of its own, and
    Ray's exit hook (``ray.shutdown``) disconnecting under that thread crashed the process
    (SIGSEGV instead of status 130) now and then. Ray frees a dead driver's actors and
    placement groups as when it is killed. A command that never imported Ray (e.g. a run
    trained in process on a small dataset) runs its exit hooks and ends without the
    interpreter's teardown, which takes about a second once PyTorch is loaded; with Ray, its
    exit hook stops the private local Ray as part of the normal shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status == INTERRUPTED:
        os._exit(status)
    if "ray" not in sys.modules:
        atexit._run_exitfuncs()  # what a normal exit runs first (logging's flush, ...)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


__all__ = ["INTERRUPTED", "USAGE_ERROR", "exit_process", "run_command"]
