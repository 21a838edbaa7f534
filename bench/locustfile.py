"""The benchmark's one Locust workload: single-row predictions, no think time, against any target.

``bench.compare`` runs it headless with ``TABULA_BENCH_REQUESTS``: a file of ``<path> <json body>`` lines,
the same file wrk sends (bench/overload.lua), written per target by bench/targets.py, so nothing here
depends on the target.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

# Bodies are encoded once so the load generator spends its CPU on requests, not on JSON.
REQUESTS = [
    tuple(line.split(" ", 1))
    for line in Path(os.environ["TABULA_BENCH_REQUESTS"]).read_text(encoding="utf-8").splitlines()
    if line.strip()
]
HEADERS = {"Content-Type": "application/json"}


class SingleRowUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        path, body = random.choice(REQUESTS)  # noqa: S311 - load, not crypto
        self.client.post(path, data=body, headers=HEADERS, name="predict")
