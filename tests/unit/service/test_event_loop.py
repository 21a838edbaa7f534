"""The worker's event loop accepts waiting connections in batches, where uvloop accepts one per turn."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn.config
import uvloop

from service import event_loop
from service.event_loop import (
    ACCEPT_BATCH,
    UVICORN_AUTO_LOOP,
    BatchAcceptLoop,
    BatchAcceptServer,
    install,
    loop_factory,
)

pytestmark = pytest.mark.unit

CROWD = 64
BACKLOG = 4 * CROWD
T = TypeVar("T")


class Recorder(asyncio.Protocol):
    """Remembers the turn of the loop its connection was made in, and what it received."""

    def __init__(self, turns: list[int], made: list[int], received: list[bytes]) -> None:
        self.turns, self.made, self.received = turns, made, received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self.turns[0])

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


def record() -> tuple[list[int], list[int], list[bytes]]:
    """The turn counter, the turns connections were made in, and the data received, for :class:`Recorder`."""
    return [0], [], []


@contextmanager
def listening(socket_class: type[socket.socket] = socket.socket) -> Iterator[socket.socket]:
    listener = socket_class(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    try:
        yield listener
    finally:
        listener.close()


@contextmanager
def clients(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections, established by the kernel before the loop runs (they wait to be accepted)."""
    connected = [socket.create_connection(address, timeout=5) for _ in range(count)]
    try:
        yield connected
    finally:
        for client in connected:
            client.close()


def run_on(
    make_loop: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """``main()`` run to its end on a new loop from ``make_loop``, which is closed afterwards."""
    loop = make_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def turns_to_accept(make_loop: Callable[[], asyncio.AbstractEventLoop], count: int) -> list[int]:
    """The loop turn in which each of ``count`` waiting connections was made, on a loop kept busy.

    A callback that reschedules itself runs once per turn of the loop and counts the turns (callbacks
    scheduled during a turn run in the next one, in uvloop as in asyncio).
    """
    turns, made, received = record()

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            turns[0] += 1
            loop.call_soon(tick)

        with listening() as listener, clients(listener.getsockname(), count):
            server = await loop.create_server(
                lambda: Recorder(turns, made, received), sock=listener, backlog=BACKLOG
            )
            tick()
            for _ in range(100 * count):
                if len(made) == count:
                    break
                await asyncio.sleep(0)
            server.close()

    run_on(make_loop, serve)
    return made


def test_uvloop_accepts_one_waiting_connection_per_turn_of_the_loop() -> None:
    # What event_loop works around (libuv src/unix/stream.c, uv__server_io, since libuv#3696): if this
    # fails, uvloop's own servers accept in batches again and service.event_loop can go.
    made = turns_to_accept(uvloop.new_event_loop, CROWD)
    assert len(made) == CROWD
    assert max(made) - min(made) >= CROWD - 1, made


def test_the_worker_loop_accepts_a_batch_of_waiting_connections_per_turn() -> None:
    crowd = ACCEPT_BATCH + ACCEPT_BATCH // 2
    made = turns_to_accept(BatchAcceptLoop, crowd)
    assert len(made) == crowd
    first_turn = made.count(min(made))
    # One batch a turn (at most, so that workers sharing a socket share a crowd), then the rest.
    assert first_turn == ACCEPT_BATCH, made
    assert max(made) - min(made) <= 3, made


def test_install_makes_the_batch_accepting_loop_uvicorns_default(monkeypatch: pytest.MonkeyPatch) -> None:
    factories = uvicorn.config.LOOP_FACTORIES
    monkeypatch.setitem(factories, UVICORN_AUTO_LOOP, factories[UVICORN_AUTO_LOOP])
    install()
    factory = uvicorn.Config(app=lambda: None).get_loop_factory()
    assert factory is BatchAcceptLoop
    assert loop_factory() is BatchAcceptLoop


def test_closing_stops_accepting_and_keeps_the_accepted_connections_open() -> None:
    turns, made, received = record()

    async def serve() -> None:
        with listening() as listener:
            server = await asyncio.get_running_loop().create_server(
                lambda: Recorder(turns, made, received), sock=listener
            )
            assert isinstance(server, BatchAcceptServer)
            assert server.is_serving()
            assert list(server.sockets) == [listener]
            with clients(listener.getsockname(), 1) as (first,):
                while not made:
                    await asyncio.sleep(0.01)
                server.close()
                await server.wait_closed()
                assert (server.is_serving(), server.sockets) == (False, ())
                with clients(listener.getsockname(), 1):
                    await asyncio.sleep(0.2)
                    first.sendall(b"still open")
                    while not received:
                        await asyncio.sleep(0.01)
        assert len(made) == 1
        assert received == [b"still open"]

    run_on(BatchAcceptLoop, serve)


class OutOfDescriptors(socket.socket):
    """A listening socket whose first accept fails as a process out of file descriptors does."""

    failures = 1  # set again by the test that uses it

    def accept(self) -> tuple[socket.socket, object]:
        if OutOfDescriptors.failures:
            OutOfDescriptors.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_running_out_of_descriptors_pauses_accepting_then_resumes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncio does the same (Lib/asyncio/selector_events.py, _accept_connection): log, stop, retry later.
    monkeypatch.setattr(event_loop, "ACCEPT_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(OutOfDescriptors, "failures", 1)
    turns, made, received = record()
    paused: list[bool] = []

    async def serve() -> None:
        with listening(OutOfDescriptors) as listener, clients(listener.getsockname(), 1):
            server = await asyncio.get_running_loop().create_server(
                lambda: Recorder(turns, made, received), sock=listener
            )
            for _ in range(500):
                paused.append(not server.is_serving())
                if made:
                    break
                await asyncio.sleep(0.005)
            server.close()

    with caplog.at_level(logging.WARNING):
        run_on(BatchAcceptLoop, serve)
    assert made, "the connection was never accepted after the pause"
    assert any(paused), "accepting did not pause"
    assert [r.getMessage() for r in caplog.records] == ["cannot accept connections for now"]


def test_servers_not_on_a_plain_tcp_listening_socket_are_uvloops_own(tmp_path: Path) -> None:
    async def serve() -> list[asyncio.AbstractServer]:
        loop = asyncio.get_running_loop()
        by_address = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix_listener.bind(str(tmp_path / "server.sock"))
        unix_listener.listen()
        by_unix_socket = await loop.create_server(asyncio.Protocol, sock=unix_listener)
        servers = [by_address, by_unix_socket]
        for server in servers:
            server.close()
        return servers

    servers = run_on(BatchAcceptLoop, serve)
    assert not any(isinstance(server, BatchAcceptServer) for server in servers)
