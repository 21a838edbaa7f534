"""The shipped payloads: rows of the held-out test split, rebuilt exactly from the data and the seed."""

import json
import math
from pathlib import Path

import pytest

from contracts.artifacts import GoldenSet
from load.config import DEFAULT_PAYLOADS_FILE
from load.payloads import FEATURE_NAMES, PARAMS_FILE, PayloadSet, build_payloads, read_rows

pytestmark = pytest.mark.unit


def test_shipped_payloads_are_valid_request_rows() -> None:
    payloads = PayloadSet.model_validate_json(DEFAULT_PAYLOADS_FILE.read_text(encoding="utf-8"))

    assert len(payloads.rows) == 500
    assert all(list(row) == list(FEATURE_NAMES) for row in payloads.rows)
    assert all(math.isfinite(value) for row in payloads.rows for value in row.values())
    # Distinct block groups, not one row repeated.
    assert len({(row["Latitude"], row["Longitude"], row["MedInc"]) for row in payloads.rows}) > 490


def test_shipped_payloads_are_rebuilt_from_trainings_test_split(data_path: Path) -> None:
    shipped = PayloadSet.model_validate_json(DEFAULT_PAYLOADS_FILE.read_text(encoding="utf-8"))

    rebuilt = build_payloads(
        data_path, PARAMS_FILE, sample_seed=shipped.sample_seed, n_rows=len(shipped.rows)
    )

    assert rebuilt == shipped


def test_rows_can_come_from_a_models_golden_set(tmp_path: Path) -> None:
    golden = GoldenSet(
        feature_names=list(FEATURE_NAMES),
        rows=[
            [8.3, 41.0, 6.9, 1.0, 322.0, 2.5, 37.88, -122.23],
            [2.0, 20.0, 5.0, 1.1, 900.0, 3.0, 34.0, -118.0],
        ],
        predictions=[4.5, 1.7],
    )
    path = golden.write(tmp_path / "golden_set.json")

    rows = read_rows(path)

    assert rows == [dict(zip(FEATURE_NAMES, values, strict=True)) for values in golden.rows]


def test_a_payloads_file_with_a_missing_feature_is_refused(tmp_path: Path) -> None:
    row = dict.fromkeys(FEATURE_NAMES, 1.0)
    del row["AveOccup"]
    path = tmp_path / "payloads.json"
    document = {
        "source": "x",
        "data_digest": "0",
        "test_size": 0.2,
        "test_seed": 1,
        "sample_seed": 1,
        "rows": [row],
    }
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ValueError, match="row 0 must have exactly the features"):
        read_rows(path)
