"""One HTTP request/response exchange as the app sees it: the status it answered, and the body's unread rest.

An answer given before the request body has been read (413, 415, a shed 503, or 404/405 to a request
with a body) must not be followed by a close while the client is still sending: the kernel answers
the unread bytes with a reset, and clients that send the whole body before they read (Python's urllib
and http.client, which also ask for ``Connection: close``) get ``Connection reset by peer`` instead of
the answer. So the rest of the body is read and thrown away before the answer starts, up to
``max_bytes`` and ``seconds``; beyond either bound the answer says ``Connection: close`` and the
server closes the connection after it. An answer that already closes the connection (a 408 for a body
that stopped arriving) goes out at once: the rest it would wait for is what did not come.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

CLOSE = (b"connection", b"close")


class Exchange:
    """Wraps the ASGI ``receive`` and ``send`` of one HTTP request."""

    __slots__ = (
        "_body_read", "_max_bytes", "_receive", "_receive_called", "_received", "_scope", "_seconds",
        "_send", "status",
    )  # fmt: skip

    def __init__(self, scope: Scope, receive: Receive, send: Send, max_bytes: int, seconds: float) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._seconds = seconds
        self._received = 0
        self._body_read = False
        self._receive_called = False
        self.status = 0

    async def receive(self) -> Message:
        self._receive_called = True
        message = await self._receive()
        self._received += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_read = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers", [])
            if not self._body_read and CLOSE not in headers and not await self._drain():
                message = {**message, "headers": [*headers, CLOSE]}
        await self._send(message)

    async def _drain(self) -> bool:
        """Read the rest of the request body; False if it is over the bounds or may never come."""
        headers = dict(self._scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            return True
        if headers.get(b"expect", b"").lower() == b"100-continue" and not self._receive_called:
            # The client waits for "100 Continue" before it sends the body; reading would invite it.
            return False
        if declared is not None and declared.isdigit() and int(declared) - self._received > self._max_bytes:
            return False
        drained = 0
        try:
            async with asyncio.timeout(self._seconds):
                while not self._body_read:
                    drained += len((await self.receive()).get("body", b""))
                    if drained > self._max_bytes:
                        return False
        except TimeoutError:
            return False
        return True
