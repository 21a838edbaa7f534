"""The plain-BentoML peer of the benchmark: one idiomatic ``@bentoml.api``, no validation or metrics of ours.

Runs inside the benchmark's own BentoML virtual environment (bench/targets.py), never in ours:

    BENCH_MODEL_DIR=DIR bentoml serve bentoml_plain:PlainSklearn --port PORT

It answers ``POST /predict`` with ``{"rows": [[...], ...]}`` and returns the list of predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class PlainSklearn:
    def __init__(self) -> None:
        self.estimator = joblib.load(Path(os.environ["BENCH_MODEL_DIR"]) / "model.joblib")

    @bentoml.api  # type: ignore[untyped-decorator]
    def predict(self, rows: list[list[float]]) -> list[float]:
        return [float(value) for value in self.estimator.predict(np.asarray(rows))]
