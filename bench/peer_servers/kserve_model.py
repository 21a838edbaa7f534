"""The KServe peer of the benchmark: a minimal custom ``kserve.Model``, the way KServe's docs write one.

Runs inside the benchmark's own KServe virtual environment (bench/targets.py), never in ours:

    python kserve_model.py --model_dir DIR --model_name NAME --http_port PORT --enable_grpc false

It answers KServe's v1 protocol, ``POST /v1/models/NAME:predict`` with ``{"instances": [[...], ...]}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import kserve
import numpy as np


class SklearnModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self) -> bool:
        self.estimator = joblib.load(self.model_dir / "model.joblib")
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {"predictions": self.estimator.predict(np.asarray(payload["instances"])).tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer(workers=1).start([SklearnModel(args.model_name, args.model_dir)])
