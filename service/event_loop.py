"""The worker's event loop: uvloop, but waiting connections are accepted in batches, not one per turn.

Since libuv 1.45 (libuv/libuv#3696, "unix: don't accept() connections in a loop"; ``uv__server_io`` in
src/unix/stream.c), a uvloop server accepts one connection per turn of the event loop. A turn of a
busy worker runs every request that is ready, about 10 ms under a crowd of single rows, so new
connections were accepted at about 100 a second. When 256 clients connected at once to a worker already
serving some, the last of them waited 1.8 s to be accepted: their first requests were the 1 s tail
that wrk reported while the service's own histogram said every request was answered within 0.2 s.
With 1,024 clients the wait passed their timeout, and they counted as unanswered.

asyncio's own loop accepts up to ``backlog`` connections each time the listening socket is readable
(``_accept_connection`` in CPython's Lib/asyncio/selector_events.py), but serves a sixth fewer
single-row requests a second here. So the worker keeps uvloop, and :class:`BatchAcceptServer` does
what asyncio does: it watches the listening socket itself, accepts the waiting connections, and
hands each to uvloop as an accepted socket (``connect_accepted_socket``). At most ``ACCEPT_BATCH`` a
turn: workers that share one listening socket (BentoML's ``workers`` above 1) would otherwise leave a
whole crowd to whichever woke first, libuv's reason for accepting one at a time. Its errors are
asyncio's too: out of file descriptors or memory, it stops accepting for a second instead of spinning.

uvicorn (which BentoML's worker starts without naming a loop) takes its "auto" loop from
``uvicorn.config.LOOP_FACTORIES``; :func:`install` points that entry at :func:`loop_factory`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

from service.logs import LOGGER_NAME

# uvicorn's name of the loop a server gets when none is configured, and where ours is found.
UVICORN_AUTO_LOOP = "auto"
LOOP_FACTORY_PATH = f"{__name__}:loop_factory"
# Connections accepted per turn of the loop: 6,400 a second at the 10 ms turns of a busy worker.
ACCEPT_BATCH = 64
# asyncio's pause after running out of descriptors or memory (Lib/asyncio/constants.py).
ACCEPT_RETRY_SECONDS = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class BatchAcceptServer(asyncio.AbstractServer):
    """A TCP server on a listening socket that accepts up to ``ACCEPT_BATCH`` waiting connections a turn."""

    def __init__(
        self,
        loop: uvloop.Loop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        backlog: int,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._socket = sock
        self._backlog = backlog
        self._serving = False
        self._closed = asyncio.Event()
        # Hand-overs to uvloop in progress; held so that none is garbage-collected half done.
        self._handovers: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        sock.listen(backlog)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed.is_set() else (self._socket,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start_accepting()

    async def serve_forever(self) -> None:
        await self.start_serving()
        await self._closed.wait()

    def close(self) -> None:
        """Stops accepting; the connections already accepted stay open (as with asyncio's servers)."""
        self._stop_accepting()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _start_accepting(self) -> None:
        if not self._serving and not self._closed.is_set():
            self._loop.add_reader(self._socket.fileno(), self._accept)
            self._serving = True

    def _stop_accepting(self) -> None:
        if self._serving:
            self._loop.remove_reader(self._socket.fileno())
            self._serving = False

    def _accept(self) -> None:
        for _ in range(min(ACCEPT_BATCH, self._backlog)):
            try:
                connection, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise
                logging.getLogger(LOGGER_NAME).warning(
                    "cannot accept connections for now",
                    extra={"error": str(error), "retry_seconds": ACCEPT_RETRY_SECONDS},
                )
                self._stop_accepting()
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._start_accepting)
                return
            connection.setblocking(False)
            handing_over = self._loop.connect_accepted_socket(self._protocol_factory, connection)
            handover = self._loop.create_task(handing_over)
            self._handovers.add(handover)
            handover.add_done_callback(self._handed_over)

    def _handed_over(self, handover: asyncio.Task[Any]) -> None:
        self._handovers.discard(handover)
        error = None if handover.cancelled() else handover.exception()
        if error is not None:
            # A client that hung up before its connection was set up: nothing to answer.
            logging.getLogger(LOGGER_NAME).debug("connection lost while accepted", exc_info=error)


class BatchAcceptLoop(uvloop.Loop):
    """uvloop whose servers on a listening TCP socket without TLS accept in batches (BentoML's case)."""

    # Takes and forwards uvloop's arguments as they come; mypy cannot match that with its overloads.
    async def create_server(self, protocol_factory: Any, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:  # type: ignore[override]
        sock, tls = kwargs.get("sock"), kwargs.get("ssl")
        tcp = (socket.AF_INET, socket.AF_INET6)
        if args or not isinstance(sock, socket.socket) or sock.family not in tcp or tls is not None:
            return await super().create_server(protocol_factory, *args, **kwargs)
        server = BatchAcceptServer(self, protocol_factory, sock, kwargs.get("backlog", 100))
        if kwargs.get("start_serving", True):
            await server.start_serving()
        return server


def loop_factory(use_subprocess: bool = False) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvicorn's loop-factory signature: the callable that makes the worker's loop."""
    return BatchAcceptLoop


def install() -> None:
    """Make uvicorn's default loop :class:`BatchAcceptLoop` in this process (before the server starts)."""
    import uvicorn.config

    uvicorn.config.LOOP_FACTORIES[UVICORN_AUTO_LOOP] = LOOP_FACTORY_PATH
