"""Where a run writes: a local (or shared) directory, or ``s3://bucket/prefix``.

Ray Train stores checkpoints there itself (``storage_path`` + ``storage_filesystem``); the
driver adds ``metrics.json`` and ``config.json``. Local files are written to a temporary name
and renamed (:func:`adasparse.host.write_text_atomic`); an S3 object appears whole with its
single PUT, so no reader ever sees half a file. S3 credentials come from the environment or
the instance role.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from adasparse.config import ConfigError
from adasparse.host import write_text_atomic


class OutputLocation:
    """``fs``: the run's filesystem (on S3 its requests ride out an outage of about a minute,
    :data:`pipelines.data.sources.PATIENT_S3`); ``quick_fs``: the same place with few retries, for
    the check before a run starts."""

    def __init__(self, fs, root: str, scheme: str, quick_fs=None):
        self.fs, self.root, self.scheme = fs, root, scheme
        self.quick_fs = quick_fs or fs

    @classmethod
    def of(cls, out: str, storage_endpoint: str | None = None) -> "OutputLocation":
        import fsspec

        if out.startswith("s3://"):
            from pipelines.data.sources import s3_filesystem

            return cls(s3_filesystem(storage_endpoint, patient=True), out.removeprefix("s3://").rstrip("/"), "s3",
                       quick_fs=s3_filesystem(storage_endpoint))
        if "://" in out and not out.startswith("file://"):
            raise ConfigError(f"--out {out}: give a local directory or s3://bucket/prefix")
        return cls(fsspec.filesystem("file"), str(Path(out.removeprefix("file://")).resolve()), "file")

    def check_writable(self, flag: str = "--out") -> None:
        """Write and remove a probe object there now (before Ray starts): a location that cannot
        be created, is read-only, or (S3) is unreachable or lacks credentials is one line."""
        probe = self.join(f".adasparse-probe-{os.getpid()}")
        try:
            if self.scheme == "file":
                self.fs.makedirs(self.root, exist_ok=True)
            self.quick_fs.pipe(probe, b"")
            self.quick_fs.rm(probe)
        except Exception as err:  # noqa: BLE001 - any failure of the probe is the user's location
            reason = (getattr(err, "strerror", None) or str(err) or type(err).__name__).splitlines()[0]
            raise ConfigError(f"{flag} {self.url(self.root)}: cannot write there: {reason}") from None

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        return path if self.scheme == "file" else f"s3://{path}"

    def arrow_fs(self):
        if self.scheme == "file":
            return None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs))

    def write_text(self, path: str, text: str) -> None:
        if self.scheme == "file":
            write_text_atomic(path, text)
        else:
            self.fs.pipe(path, text.encode())

    def fault_marker(self, name: str) -> str:
        """Fault injection's once-only marker: a local file (workers of a test share the machine)."""
        if self.scheme == "file":
            return self.join(name, ".fault_injected")
        return os.path.join(tempfile.gettempdir(), f"adasparse-{name}.fault_injected")


__all__ = ["OutputLocation"]
