"""An early answer waits until the rest of the request body is read, within bounds; beyond, it closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.exchange import CLOSE, Exchange

pytestmark = pytest.mark.unit

START = {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]}


class Client:
    """ASGI receive/send of a client that sends ``parts`` of a body and records what the app does."""

    def __init__(self, parts: list[bytes], hang: bool = False) -> None:
        self.parts = list(parts)
        self.hang = hang
        self.received = 0
        self.events: list[str] = []
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.hang and not self.parts:
            await asyncio.sleep(3600)
        part = self.parts.pop(0)
        self.received += 1
        self.events.append("receive")
        return {"type": "http.request", "body": part, "more_body": bool(self.parts) or self.hang}

    async def send(self, message: dict[str, Any]) -> None:
        self.events.append(message["type"])
        self.sent.append(message)


def answer_early(headers: dict[str, str], client: Client, max_bytes: int = 100, seconds: float = 5) -> Client:
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    exchange = Exchange(scope, client.receive, client.send, max_bytes, seconds)
    asyncio.run(exchange.send(dict(START)))
    assert exchange.status == 413
    return client


def closes(client: Client) -> bool:
    return CLOSE in client.sent[0]["headers"]


@pytest.mark.parametrize("framing", [{"content-length": "90"}, {"transfer-encoding": "chunked"}])
def test_the_unread_body_is_read_before_the_answer(framing: dict[str, str]) -> None:
    client = answer_early(framing, Client([b"x" * 30] * 3))
    assert client.events == ["receive", "receive", "receive", "http.response.start"]
    assert not closes(client)


def test_a_declared_body_over_the_bound_is_not_read_and_the_connection_closes() -> None:
    client = answer_early({"content-length": "101"}, Client([b"x" * 101]))
    assert client.received == 0
    assert closes(client)


def test_a_chunked_body_over_the_bound_is_read_up_to_it_then_the_connection_closes() -> None:
    client = answer_early({"transfer-encoding": "chunked"}, Client([b"x" * 60] * 5))
    assert client.received == 2
    assert closes(client)


def test_a_client_waiting_for_100_continue_is_not_invited_to_send() -> None:
    client = answer_early({"content-length": "90", "expect": "100-continue"}, Client([b"x" * 90]))
    assert client.received == 0
    assert closes(client)


def test_a_body_that_stops_coming_is_waited_for_no_longer_than_the_bound() -> None:
    client = answer_early({"transfer-encoding": "chunked"}, Client([b"x"], hang=True), seconds=0.2)
    assert client.received == 1
    assert closes(client)


def test_a_request_without_a_body_is_answered_at_once() -> None:
    client = answer_early({}, Client([]))
    assert client.events == ["http.response.start"]
    assert not closes(client)
