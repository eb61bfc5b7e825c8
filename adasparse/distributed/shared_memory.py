"""All-gather through shared memory for data-parallel ranks that share one host (CPU training).

Why: on CPU the process group's collectives are gloo's, and gloo's latency dwarfs the work of
a small step: a collective of a few floats costs many times a loopback TCP round trip between
the same processes, and at batch 256 the exchange was a third of a CPU worker's step
(figures in docs/training.md, "Data parallelism").

How: one file in ``/dev/shm`` holds two banks of ``world`` slots of ``numel`` float32 each,
mapped by every rank. A step writes this rank's vector into its slot of bank ``step % 2``,
then meets the others at a barrier (one byte to rank 0 and one byte back over loopback TCP;
the system calls also order the memory writes before the reads), after which every slot of the
bank is readable. Two banks suffice: a rank can write bank b again only two steps later, after
the barrier of the step between, which every rank enters only once it is done reading bank b.

The file is unlinked as soon as every rank has mapped it, so nothing is left in ``/dev/shm``
even if a process dies. If a peer dies, the barrier's socket closes and the survivors raise
instead of hanging (or time out after ``timeout`` seconds, like a gloo collective).
"""

from __future__ import annotations

import os
import socket
import uuid

import torch
import torch.distributed as dist

SHM_DIR = "/dev/shm"
SETUP_TIMEOUT_S = 60.0  # connecting the barrier's loopback sockets


def host_key() -> str:
    """Identifies the machine (same key = same memory): host name and kernel boot id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def all_on_one_host(group=None) -> bool:
    """Whether every rank of ``group`` runs on this rank's machine (a collective: call on all ranks)."""
    keys = [None] * dist.get_world_size(group)
    dist.all_gather_object(keys, host_key(), group=group)
    return len(set(keys)) == 1


class SharedMemoryGather:
    """``gather(vector) -> (world, numel)``: every rank's float32 vector, for ranks on one host.

    Construct on every rank of ``group`` at the same point (it uses the group to agree on the
    file and the barrier's port); :meth:`create` returns None on every rank, instead, where
    shared memory is unavailable (no ``/dev/shm``, too little space, an error on any rank)."""

    def __init__(self, numel: int, group=None, timeout: float = 1800.0):
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.numel = numel
        self.step = 0
        self._listener: socket.socket | None = None
        self._peers: list[socket.socket] = []
        self._banks: torch.Tensor | None = None
        self._timeout = timeout

    @classmethod
    def create(cls, numel: int, group=None, timeout: float = 1800.0) -> "SharedMemoryGather | None":
        """A ready exchange, or None on every rank (they agree) if any rank could not set it up."""
        self = cls(numel, group, timeout)
        ok = True
        setup = [None]
        if self.rank == 0:
            try:
                setup = [self._create_file_and_listen()]
            except OSError:  # no /dev/shm, too little space, no loopback port
                ok, setup = False, [None]
        dist.broadcast_object_list(setup, src=0, group=group)
        path, port = setup[0] or (None, None)
        if path is not None and self.rank != 0:
            try:
                self._map(path)
            except (OSError, RuntimeError):
                ok = False
        oks = [None] * self.world
        dist.all_gather_object(oks, ok, group=group)  # every rank has mapped it (or failed) here
        if self.rank == 0 and path is not None:
            os.unlink(path)
        if not all(oks):
            self.close()
            return None
        try:
            self._connect(port)
        except OSError:
            ok = False
        dist.all_gather_object(oks, ok, group=group)
        if not all(oks):
            self.close()
            return None
        return self

    @staticmethod
    def bytes_needed(numel: int, world: int) -> int:
        return 2 * world * numel * 4

    def _create_file_and_listen(self) -> tuple[str, int]:
        size = self.bytes_needed(self.numel, self.world)
        st = os.statvfs(SHM_DIR)
        if st.f_bavail * st.f_frsize < 2 * size:  # leave room: /dev/shm also holds Ray's objects
            raise OSError(f"{SHM_DIR} has {st.f_bavail * st.f_frsize} bytes free, {size} needed")
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=self.world)
        path = os.path.join(SHM_DIR, f"adasparse-grad-{uuid.uuid4().hex}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map(path)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return path, self._listener.getsockname()[1]

    def _map(self, path: str) -> None:
        flat = torch.from_file(path, shared=True, size=2 * self.world * self.numel, dtype=torch.float32)
        self._banks = flat.view(2, self.world, self.numel)

    def _connect(self, port: int) -> None:
        if self.rank == 0:
            self._listener.settimeout(SETUP_TIMEOUT_S)
            for _ in range(self.world - 1):
                conn, _ = self._listener.accept()
                self._peers.append(conn)
            self._listener.close()
            self._listener = None
        else:
            self._peers.append(socket.create_connection(("127.0.0.1", port), timeout=SETUP_TIMEOUT_S))
        for s in self._peers:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(self._timeout)

    def _recv_byte(self, s: socket.socket) -> None:
        if not s.recv(1):
            raise RuntimeError("a data-parallel peer closed the shared-memory gradient exchange (it died or left)")

    def _barrier(self) -> None:
        if self.rank == 0:
            for s in self._peers:
                self._recv_byte(s)
            for s in self._peers:
                s.sendall(b"\x01")
        else:
            self._peers[0].sendall(b"\x01")
            self._recv_byte(self._peers[0])

    def next_slot(self) -> torch.Tensor:
        """This rank's slot for the next :meth:`gather` (numel floats): writing the vector here
        directly (e.g. ``torch.cat(parts, out=slot)``) saves ``gather`` a copy."""
        return self._banks[self.step % 2, self.rank]

    def gather(self, vector: torch.Tensor | None = None) -> torch.Tensor:
        """Every rank's ``vector`` (None: what this rank wrote into :meth:`next_slot`) as rows of
        a (world, numel) view of shared memory, valid until this rank's next call but one: use
        it (or copy it) before then."""
        bank = self._banks[self.step % 2]
        if vector is not None:
            bank[self.rank].copy_(vector)
        self._barrier()
        self.step += 1
        return bank

    def close(self) -> None:
        for s in self._peers:
            s.close()
        self._peers = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._banks = None


__all__ = ["SharedMemoryGather", "all_on_one_host", "host_key"]
