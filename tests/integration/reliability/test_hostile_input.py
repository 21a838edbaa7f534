"""Hostile input against a real server with the chart's settings: never a 5xx, never a crash, bounded memory.

tests/integration/service checks each client error's exact body and runs schemathesis for server
errors; this adds every response check schemathesis has, and hypothesis-generated raw bodies for every
endpoint and method: number literals JSON forbids, huge and deep documents, wrong types, unicode.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.reliability.harness import (
    ModelVersions,
    payload_rows,
    record_figures,
    serving,
    tree_pids,
    tree_rss,
)
from tests.integration.service.conftest import FEATURES, PROJECT_ROOT
from tests.support import Server, unmeasured

pytestmark = [pytest.mark.load, pytest.mark.slow]

MB = 1_000_000
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
ENDPOINTS = [
    "/predict",
    "/predict/batch",
    "/model",
    "/livez",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/v2/health/ready",
    "/v2/models/housing-price",
    "/v2/models/housing-price/infer",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
NUMBER_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1" + "0" * 400,
    "1e-400",
    "-0",
    "0x1F",
    "01",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=40,
)
feature_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324]),
    json_values,
)


def row_json(values: dict[str, object]) -> str:
    return json.dumps(values, ensure_ascii=False)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Raw request bodies: rows with hostile values, literals JSON forbids, deep or big documents."""
    kind = draw(st.sampled_from(["row", "literal", "batch", "json", "deep", "bytes", "unicode-keys"]))
    if kind == "row":
        row = {
            name: draw(feature_values)
            for name in draw(st.permutations(FEATURES).map(lambda f: f[: draw(st.integers(0, 8))]))
        }
        return row_json(row).encode()
    if kind == "literal":
        base = payload_rows()[0]
        name = draw(st.sampled_from(FEATURES))
        literal = draw(st.sampled_from(NUMBER_LITERALS))
        return row_json({**base, name: 0}).replace(f'"{name}": 0', f'"{name}": {literal}').encode()
    if kind == "batch":
        count = draw(st.sampled_from([0, 1, 999, 1000, 1001, 5000]))
        return json.dumps({"rows": [payload_rows()[0]] * count}).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 100_000]))
        opener = draw(st.sampled_from(["[", '{"rows":', '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "unicode-keys":
        return row_json(
            {draw(st.text(min_size=1, max_size=5)): draw(feature_values) for _ in range(8)}
        ).encode()
    return json.dumps(draw(json_values)).encode()


@pytest.fixture(scope="module")
def hostile(
    model: ModelVersions, chart_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("hostile") / "hostile.log"
    with serving(model.tags["stable"], model.bentoml_home, log, **chart_settings) as running:
        yield running


def test_hypothesis_fuzzing_of_every_endpoint_finds_no_server_error(hostile: Server) -> None:
    pids = tree_pids(hostile.process.pid)
    rss_before = tree_rss(hostile.process.pid)
    statuses: dict[int, int] = {}
    server_errors: list[tuple[str, str, bytes, int]] = []
    unanswered: list[tuple[str, str, bytes, str]] = []

    # A connection per example: a kept-alive connection can be closed by the server as the next request
    # is sent (CI once saw one such drop in 300 examples, never reproduced in 9,000 here), and keep-alive
    # after every kind of early answer is tested on its own (tests/integration/service). A fresh
    # connection that gets no answer is the server's fault, and fails the test with the server's log.
    one_use = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=hostile.base_url, timeout=30, limits=one_use) as http:

        @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(
            # Mostly POSTs to the prediction endpoints, where the parsing is.
            method=st.one_of(st.just("POST"), st.just("POST"), st.sampled_from(METHODS)),
            path=st.one_of(st.sampled_from(ENDPOINTS[:2]), st.sampled_from(ENDPOINTS)),
            body=bodies(),
            content_type=st.sampled_from(
                ["application/json", "application/json; charset=utf-8", "text/plain"]
            ),
        )
        def probe(method: str, path: str, body: bytes, content_type: str) -> None:
            try:
                response = http.request(method, path, content=body, headers={"content-type": content_type})
            except httpx.TransportError as error:
                unanswered.append((method, path, body[:200], repr(error)))
                return
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                server_errors.append((method, path, body[:200], response.status_code))

        probe()
        # Bodies over the limit, with and without a declared length (chunked upload), get 413.
        oversized = b'{"rows": [' + b",".join([json.dumps(payload_rows()[0]).encode()] * 10_000) + b"]}"
        declared = http.post(
            "/predict/batch", content=oversized, headers={"content-type": "application/json"}
        )
        chunked = http.post(
            "/predict/batch",
            content=iter([oversized[i : i + 65536] for i in range(0, len(oversized), 65536)]),
            headers={"content-type": "application/json"},
        )
        alive = http.get("/livez").status_code
        ready = http.get("/readyz").status_code
        valid = http.post("/predict", json=payload_rows()[0]).status_code
    rss_after = tree_rss(hostile.process.pid)
    figures = {
        "examples": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": len(server_errors),
        "unanswered": len(unanswered),
        "oversized_body_bytes": len(oversized),
        "oversized_declared_status": declared.status_code,
        "oversized_chunked_status": chunked.status_code,
        "rss_before_mb": round(rss_before / MB, 1),
        "rss_after_mb": round(rss_after / MB, 1),
    }
    record_figures("hostile_input", figures)
    assert not server_errors, server_errors[:5]
    assert not unanswered, f"{unanswered[:5]}\n--- server log ---\n{hostile.log()[-6000:]}"
    assert declared.status_code == 413, declared.text
    assert chunked.status_code == 413, chunked.text
    assert (alive, ready, valid) == (200, 200, 200)
    assert tree_pids(hostile.process.pid) == pids, "a server process was restarted"
    assert rss_after - rss_before < 200 * MB, figures


def test_schemathesis_every_check_against_the_served_openapi(hostile: Server, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(SCHEMATHESIS_CONFIG),
            "run", f"{hostile.base_url}/openapi.json",
            "--checks", "all", "--max-examples", "30", "--seed", "2",
            "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1", "--report-dir", str(tmp_path),
        ],
        cwd=PROJECT_ROOT, env=unmeasured(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    tested = re.search(r"(\d+) passed", result.stdout)
    record_figures(
        "schemathesis_all_checks", {"exit_code": result.returncode, "summary": result.stdout[-600:]}
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert tested, result.stdout[-3000:]
    assert httpx.get(f"{hostile.base_url}/livez").status_code == 200
