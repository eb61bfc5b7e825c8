"""Facts about the machine this process runs on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a local file so that no reader ever sees half of it: a temporary name beside it,
    then one rename (atomic on POSIX within a file system)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


__all__ = ["usable_cores", "write_text_atomic"]
