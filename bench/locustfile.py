"""The benchmark's one workload: single-row predictions, no think time, against any of the targets.

``bench.compare`` runs it headless with ``HOUSING_BENCH_KIND`` (``service``, ``mlflow`` or ``constant``)
and ``HOUSING_BENCH_ROWS`` (a JSON list of feature rows); only the request shape differs per kind.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

KIND = os.environ["HOUSING_BENCH_KIND"]
ROWS: list[dict[str, float]] = json.loads(Path(os.environ["HOUSING_BENCH_ROWS"]).read_text(encoding="utf-8"))
COLUMNS = list(ROWS[0])


def _body(row: dict[str, float]) -> str:
    if KIND == "mlflow":
        return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [list(row.values())]}})
    return json.dumps(row)


# Bodies are encoded once so the load generator spends its CPU on requests, not on JSON.
BODIES = [_body(row) for row in ROWS]
PATH = "/invocations" if KIND == "mlflow" else "/predict"
HEADERS = {"Content-Type": "application/json"}


class SingleRowUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        self.client.post(PATH, data=random.choice(BODIES), headers=HEADERS, name="predict")  # noqa: S311
