"""Request rows for the load test, drawn from an example's held-out test split, features by name.

``python -m load.payloads --example housing --data ../shared/data/cal_housing.csv.gz --seed 42`` (or
``--example iris``, whose data is bundled) writes the example folder's ``payloads.json`` with training's
own loader and split (the example's params.yaml), so the rows are ones no model was fitted or selected
on. The locustfile sends that file's rows, a file named by ``TABULA_LOAD_PAYLOADS_FILE`` (payloads or
a model's ``golden_set.json``), or, for an example without a ``payloads.json``, rows it draws from the
example's test split at start-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.artifacts import GoldenSet
from contracts.errors import ConfigError
from contracts.examples import DEFAULT_EXAMPLE, Example, load_example
from load.config import PAYLOADS_FILE, LoadSettings

# One request body: feature name -> value (an int for an integer feature, which the service takes strictly).
Row = dict[str, int | float]


class PayloadSet(BaseModel):
    """Rows to send to the service, with how they were drawn so the file can be rebuilt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    example: str = Field(min_length=1, description="Example (example.yaml `name`) the rows belong to.")
    features: list[str] = Field(min_length=1, description="The example's feature names, in model order.")
    source: str = Field(description="Data file or scikit-learn loader the rows were derived from.")
    data_digest: str = Field(description="contracts.data digest of the derived data set.")
    test_size: float = Field(gt=0, lt=1, description="Share of the data in training's frozen test split.")
    test_seed: int = Field(description="Seed of training's test split.")
    sample_seed: int = Field(description="Seed of the sample drawn from the test split.")
    rows: list[Row] = Field(min_length=1, description="Request bodies for /predict.")

    @model_validator(mode="after")
    def _check_features(self) -> Self:
        expected = set(self.features)
        for index, row in enumerate(self.rows):
            if set(row) != expected:
                raise ValueError(f"row {index} must have exactly the features {sorted(expected)}")
        return self


def read_rows(path: Path) -> list[Row]:
    """Request rows from a payloads file or from a model's golden set."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if "feature_names" in document:
        golden = GoldenSet.model_validate(document)
        return [dict(zip(golden.feature_names, row, strict=True)) for row in golden.rows]
    return PayloadSet.model_validate(document).rows


def build_payloads(example: Example, data: Path | None, sample_seed: int, n_rows: int) -> PayloadSet:
    """Sample request rows from the test split training holds out (same loader, same split params).

    ``data`` replaces the example's own source, as ``--data`` does for training.
    """
    from contracts.data import load_dataset, split_dataset
    from contracts.params import load_params

    spec = example.spec
    split_params = load_params(example.params_file).split
    dataset = load_dataset(data, spec.feature_names, spec.target, example)
    stratify = spec.task == "classification"
    test = split_dataset(dataset, **split_params.model_dump(), stratify=stratify).x_test
    sample = test.sample(n=min(n_rows, len(test)), random_state=sample_seed)
    integers = {feature.name for feature in spec.features if feature.type == "integer"}
    rows = [
        {str(name): int(value) if name in integers else round(float(value), 6) for name, value in row.items()}
        for row in sample.to_dict("records")
    ]
    return PayloadSet(
        example=spec.name,
        features=spec.feature_names,
        source=Path(dataset.source).name,
        data_digest=dataset.digest,
        test_size=split_params.test_size,
        test_seed=split_params.test_seed,
        sample_seed=sample_seed,
        rows=rows,
    )


def example_rows(example: Example, sample_seed: int = 42, n_rows: int = 500) -> list[Row]:
    """The example folder's ``payloads.json``, or rows drawn now from its test split when it has none."""
    path = example.folder / PAYLOADS_FILE
    if not path.is_file():
        return build_payloads(example, None, sample_seed, n_rows).rows
    payloads = PayloadSet.model_validate_json(path.read_text(encoding="utf-8"))
    if payloads.features != example.spec.feature_names:
        raise ConfigError(
            f"{path} has the features {payloads.features}, but example {example.spec.name!r} declares "
            f"{example.spec.feature_names}: rebuild it with "
            f"`python -m load.payloads --example {example.folder}`"
        )
    return payloads.rows


def load_rows(settings: LoadSettings) -> list[Row]:
    """The rows a load run sends: ``payloads_file`` when given, else the example's."""
    if settings.payloads_file is not None:
        return read_rows(settings.payloads_file)
    return example_rows(load_example(settings.example))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write load-test rows sampled from the held-out test split.")
    parser.add_argument("--example", default=DEFAULT_EXAMPLE, help="Example name (housing, iris) or folder.")
    parser.add_argument("--data", type=Path, help="CSV/CSV.gz replacing the example's own data source.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the sample drawn from the test split.")
    parser.add_argument("--rows", type=int, default=500, help="Rows to sample from the test split.")
    parser.add_argument("--out", type=Path, help="Output file; default: the example folder's payloads.json.")
    args = parser.parse_args(argv)
    example = load_example(args.example)
    payloads = build_payloads(example, args.data, args.seed, args.rows)
    out: Path = args.out or example.folder / PAYLOADS_FILE
    out.write_text(payloads.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(payloads.rows)} rows of example {example.spec.name!r} to {out}")


if __name__ == "__main__":
    main()
