"""The one base type of errors caused by what a user gave (a config value, a data file, a flag).

Commands print such an error as one line and exit with status 2; anything else is a bug and
keeps its traceback. :func:`find_user_error` also finds one that comes back wrapped — by a Ray
task (``RayTaskError.cause``), by Ray Train's worker group (``worker_failures``), or chained
with ``raise ... from`` — by walking the wrapping objects, never by matching text.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user; the message is one line naming the file, key or column."""


class Interrupted(UserError):
    """The user stopped the command (Ctrl-C): one line, exit status 130."""


def find_user_error(err: BaseException | None) -> UserError | None:
    """The :class:`UserError` that ``err`` is or wraps, if any (breadth first, cycles skipped)."""
    for e in wrapped_errors(err):
        if isinstance(e, UserError):
            # a Ray task's error is re-raised as a class deriving from both RayTaskError and the
            # cause's class, whose text is the whole remote traceback: the cause has the one line
            cause = getattr(e, "cause", None)
            return cause if isinstance(cause, UserError) else e
    return None


def wrapped_errors(err: BaseException | None):
    """``err`` and every exception it carries (chains, Ray task causes, worker failures), each once."""
    seen: set[int] = set()
    queue = [err]
    while queue:
        e = queue.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        queue.extend(_wrapped(e))


def _wrapped(e: BaseException) -> list[BaseException]:
    """Exceptions that ``e`` carries: its chain, a Ray task's cause, a worker group's failures."""
    out: list[BaseException] = [x for x in (e.__cause__, e.__context__) if x is not None]
    cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError and its subclasses
    if isinstance(cause, BaseException):
        out.append(cause)
    failures = getattr(e, "worker_failures", None)  # ray.train's WorkerGroupError: {rank: exception}
    if isinstance(failures, dict):
        out.extend(v for v in failures.values() if isinstance(v, BaseException))
    group = getattr(e, "exceptions", None)  # an exception group (Python 3.11+)
    if isinstance(group, (list, tuple)):
        out.extend(x for x in group if isinstance(x, BaseException))
    return out


__all__ = ["Interrupted", "UserError", "find_user_error", "wrapped_errors"]
