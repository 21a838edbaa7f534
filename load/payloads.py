"""Request rows for the load test, drawn from the held-out test split of California Housing.

``python -m load.payloads --data ../shared/data/cal_housing.csv.gz --seed 42`` regenerates
``load/payloads.json`` with training's own loader and split (examples/housing/params.yaml), so the
rows are ones no model was fitted or selected on. The locustfile reads that file, or a model's
``golden_set.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.artifacts import GoldenSet
from load.config import DEFAULT_PAYLOADS_FILE

EXAMPLE_FOLDER = Path(__file__).resolve().parents[1] / "examples" / "housing"
# The housing model's request fields, as its example declares them (the served contract's features).
FEATURE_NAMES: tuple[str, ...] = tuple(
    str(feature["name"])
    for feature in yaml.safe_load((EXAMPLE_FOLDER / "example.yaml").read_text(encoding="utf-8"))["features"]
)
TARGET = "MedHouseVal"
# The training params whose split the rows are drawn from.
PARAMS_FILE = EXAMPLE_FOLDER / "params.yaml"


class PayloadSet(BaseModel):
    """Rows to send to the service, with how they were drawn so the file can be rebuilt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="Data file the rows were derived from.")
    data_digest: str = Field(description="training.data digest of the derived data set.")
    test_size: float = Field(gt=0, lt=1, description="Share of the data in training's frozen test split.")
    test_seed: int = Field(description="Seed of training's test split.")
    sample_seed: int = Field(description="Seed of the sample drawn from the test split.")
    rows: list[dict[str, float]] = Field(min_length=1, description="Request bodies for /predict.")

    @model_validator(mode="after")
    def _check_features(self) -> PayloadSet:
        expected = set(FEATURE_NAMES)
        for index, row in enumerate(self.rows):
            if set(row) != expected:
                raise ValueError(f"row {index} must have exactly the features {sorted(expected)}")
        return self


def read_rows(path: Path) -> list[dict[str, float]]:
    """Request rows from a payloads file or from a model's golden set."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if "predictions" in document:
        golden = GoldenSet.model_validate(document)
        return [dict(zip(golden.feature_names, row, strict=True)) for row in golden.rows]
    return PayloadSet.model_validate(document).rows


def build_payloads(data: Path, params_file: Path, sample_seed: int, n_rows: int) -> PayloadSet:
    """Sample request rows from the test split training holds out (same loader, same split params)."""
    from training.data import load_dataset, split_dataset
    from training.params import load_params

    split_params = load_params(params_file).split
    dataset = load_dataset(data, list(FEATURE_NAMES), TARGET)
    test = split_dataset(dataset, **split_params.model_dump()).x_test
    sample = test.sample(n=min(n_rows, len(test)), random_state=sample_seed)
    rows = [
        {str(name): round(float(value), 6) for name, value in row.items()}
        for row in sample.to_dict("records")
    ]
    return PayloadSet(
        source=data.name,
        data_digest=dataset.digest,
        test_size=split_params.test_size,
        test_seed=split_params.test_seed,
        sample_seed=sample_seed,
        rows=rows,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write load-test rows sampled from the held-out test split.")
    parser.add_argument("--data", type=Path, required=True, help="Raw cal_housing.csv.gz.")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="Training params (its split).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the sample drawn from the test split.")
    parser.add_argument("--rows", type=int, default=500, help="Rows to sample from the test split.")
    parser.add_argument("--out", type=Path, default=DEFAULT_PAYLOADS_FILE)
    args = parser.parse_args(argv)
    payloads = build_payloads(args.data, args.params, args.seed, args.rows)
    args.out.write_text(payloads.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(payloads.rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
