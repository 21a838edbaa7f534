"""Every ordinary HTTP client reads the 413 of an oversized body from a real `bentoml serve` (issue 10).

Clients that send the whole body before reading and ask for ``Connection: close`` (urllib always does)
used to get ``Connection reset by peer``: the server answered early and closed with the body unread,
so the kernel reset the connection. It now reads the rest first.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.service.conftest import requests_counted
from tests.integration.service.test_service_http import ROW
from tests.support import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODIES = {
    "10 MB document": b'{"pad": "' + b"x" * 10_000_000 + b'"}',
    "200,000-row batch": json.dumps({"rows": [ROW] * 200_000}).encode(),
}
CHUNK = 64 * 1024
JSON = {"content-type": "application/json"}


def chunks(body: bytes) -> Iterator[bytes]:
    return (body[start : start + CHUNK] for start in range(0, len(body), CHUNK))


def with_urllib(url: str, body: bytes, chunked: bool) -> tuple[int, bytes]:
    # An iterable body without Content-Length goes out chunked; urllib always asks for Connection: close.
    data = chunks(body) if chunked else body
    request = urllib.request.Request(url, data=data, headers=JSON, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def with_http_client(
    url: str, body: bytes, chunked: bool, headers: dict[str, str] = JSON
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, body=chunks(body) if chunked else body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def with_requests(url: str, body: bytes, chunked: bool) -> tuple[int, bytes]:
    response = requests.post(url, data=chunks(body) if chunked else body, headers=JSON, timeout=30)
    return response.status_code, response.content


CLIENTS: dict[str, Callable[[str, bytes, bool], tuple[int, bytes]]] = {
    "urllib.request": with_urllib,
    "http.client": with_http_client,
    # The server closes after answering such a request: what urllib meets, without urllib.
    "http.client, Connection: close": lambda url, body, chunked: with_http_client(
        url, body, chunked, JSON | {"connection": "close"}
    ),
    "requests": with_requests,
}


def requests_413(served: Server) -> int:
    return sum(n for (_, status), n in requests_counted(served.base_url).items() if status == "413")


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("body", list(BODIES))
def test_every_client_reads_the_413(served: Server, client: str, chunked: bool, body: str) -> None:
    before = requests_413(served)
    started = time.perf_counter()
    status, answer = CLIENTS[client](f"{served.base_url}/predict/batch", BODIES[body], chunked)
    seconds = time.perf_counter() - started
    framing = "chunked" if chunked else "content-length"
    print(f"\n[413] {client} {framing} {body}: {status} in {seconds:.3f} s")
    assert status == 413, answer[:300]
    error = json.loads(answer)["error"]
    assert error["type"] == "payload_too_large"
    assert error["details"][0]["constraint"] == "max_bytes"
    assert requests_413(served) - before == 1


def test_a_kept_alive_connection_serves_the_next_request_after_a_413(served: Server) -> None:
    with requests.Session() as session:
        refused = session.post(
            f"{served.base_url}/predict", data=BODIES["10 MB document"], headers=JSON, timeout=30
        )
        answered = session.post(f"{served.base_url}/predict", json=ROW, timeout=30)
    assert refused.status_code == 413, refused.text[:300]
    assert refused.headers.get("connection") != "close"
    assert answered.status_code == 200, answered.text[:300]
