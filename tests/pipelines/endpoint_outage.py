"""An S3 endpoint that can go down: a TCP relay on loopback in front of moto's server.

Stopping moto's threaded server is not an outage: its handler threads keep serving the
clients' kept-alive connections. While this relay is down its port refuses connections and
every open connection has been cut, as when an endpoint's host goes away; back up, it listens
on the same port again.
"""

from __future__ import annotations

import socket
import threading
import time


class EndpointRelay:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.outages: list[tuple[float, float]] = []  # (down at, back at), time.time()
        self.back()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def back(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        if self.outages and self.outages[-1][1] == 0.0:
            self.outages[-1] = (self.outages[-1][0], time.time())

    def down(self) -> None:
        self.outages.append((time.time(), 0.0))
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def outage(self, seconds: float) -> None:
        self.down()
        time.sleep(seconds)
        self.back()

    def close(self) -> None:
        self.down()
        self.outages.pop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: down
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._open.difference_update((src, dst))
